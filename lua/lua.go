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
// Concurrency (prelude.lua, concurrency.lua: leases).
package lua

import _ "embed"

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

// Decide returns the source of the decision script: one or more decisions
// (token bucket, sliding window, sliding log, fixed window), each atomic,
// in one call. The argument layout is described in decide.lua.
func Decide() string { return prelude + algorithms + decide }

// Multi returns the source of the all-or-nothing script: one decision over
// several quotas of one identity. The argument layout is described in
// multi.lua.
func Multi() string { return prelude + algorithms + multi }

// Concurrency returns the source of the lease script: acquire, release,
// extend or inspect leases on a bounded, weighted in-flight capacity. The
// argument layout is described in concurrency.lua.
func Concurrency() string { return prelude + concurrency }
