// Package lua holds the Redis Lua scripts of the rate limiter, embedded in the
// binary. The scripts live in their own directory (and package) because
// go:embed cannot reach a parent directory, and because they are the contract
// with Redis: reviewing these files shows everything a decision does.
//
// Every script follows the same rules: all keys through KEYS (one call's
// keys share a Cluster slot), time from Redis TIME, integer microsecond
// arithmetic (exact in a Lua double), an all-integer reply, state written
// with a TTL, O(1) work per decision (the sliding log and the concurrency
// leases: O(log n) plus the entries a call touches), hostile arguments
// answered with an error reply before anything is written.
//
// Redis receives three self-contained scripts, each assembled from the
// files here: Decide (prelude.lua, algorithms.lua, decide.lua: one or many
// decisions of the four counting algorithms), Multi (prelude.lua,
// algorithms.lua, multi.lua: all or nothing over several quotas) and
// Concurrency (prelude.lua, concurrency.lua: leases). Library is Decide
// as a Redis Functions library (Redis 7 or later): the same text, whose
// top level Redis runs once at FUNCTION LOAD rather than on every call.
package lua

import (
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"strings"
)

var (
	//go:embed prelude.lua
	prelude string
	//go:embed algorithms.lua
	algorithms string
	//go:embed decide.lua
	decide string
	//go:embed multi.lua
	multi string
	//go:embed concurrency.lua
	concurrency string
)

// A script binds the library functions it uses (bind, in prelude.lua)
// before its own text runs.
const bindNow = "bind()\n"

// Decide returns the source of the decision script: one or more decisions
// (token bucket, sliding window, sliding log, fixed window), each atomic,
// in one call. The argument layout is described in decide.lua.
func Decide() string { return prelude + algorithms + bindNow + decide }

// Multi returns the source of the all-or-nothing script: one decision over
// several quotas of one identity. The argument layout is described in
// multi.lua.
func Multi() string { return prelude + algorithms + bindNow + multi }

// Concurrency returns the source of the lease script: acquire, release,
// extend or inspect leases on a bounded, weighted in-flight capacity. The
// argument layout is described in concurrency.lua.
func Concurrency() string { return prelude + bindNow + concurrency }

// The library's text, with versionMark where its version goes. The
// function's body is decide.lua as is: KEYS and ARGV, globals in a script,
// are the library's upvalues, set at the start of each call (Redis runs one
// function at a time); the cache of parsed arguments (parsed, in
// prelude.lua) is bounded; the first call binds the library functions,
// which FUNCTION LOAD cannot reach. No flags: the function writes and calls TIME (allowed in a
// function since Redis 7.0, which replicates effects), and its keys share
// one slot.
const (
	versionMark = "<version>"
	libraryHead = "#!lua name=ratelimit_" + versionMark + "\n" +
		"local KEYS, ARGV\n"
	functionHead = "redis.register_function('ratelimit_decide_" + versionMark + "', function(keys, args)\n" +
		"KEYS, ARGV = keys, args\n" +
		"if nparsed > 1024 then parsed, nparsed = {}, 0 end\n" +
		"if not call then bind() end\n"
	functionTail = "\nend)\n"
)

// The library's text and its function's name, with the version in place
// (computed once: Library and DecideFunction are on the hot path of no
// one, but a SHA-1 per call would be waste).
var (
	library      string
	functionName string
)

func init() {
	text := libraryHead + prelude + algorithms + functionHead + decide + functionTail
	sum := sha1.Sum([]byte(text))
	version := hex.EncodeToString(sum[:6])
	library = strings.ReplaceAll(text, versionMark, version)
	functionName = "ratelimit_decide_" + version
}

// Library returns the source of a Redis Functions library (Redis 7.0 or
// later) for FUNCTION LOAD: the decision script of Decide, whose
// function DecideFunction takes the same keys and arguments and gives the
// same reply, run with FCALL. The library's name and its function's carry
// a version, the first 12 hex digits of the SHA-1 of its text, so that
// processes running different versions of this package can share one
// Redis, each loading its own library beside the others' (never FUNCTION
// LOAD REPLACE).
func Library() string { return library }

// DecideFunction returns the name of Library's decision function, for
// FCALL.
func DecideFunction() string { return functionName }
