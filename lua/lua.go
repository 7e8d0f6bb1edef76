// Package lua holds the Redis Lua scripts of the rate limiter, embedded in the
// binary. The scripts live in their own directory (and package) because
// go:embed cannot reach a parent directory, and because they are the contract
// with Redis: reviewing one file shows everything a decision does.
//
// Every script follows the same rules: all keys through KEYS (sharing the
// identity's hash tag), time from Redis TIME, integer microsecond arithmetic
// (exact in a Lua double), an all-integer reply, state written with a TTL,
// O(1) work (the sliding log and the concurrency leases: O(log n) plus the
// entries a call touches), hostile arguments answered with an error reply
// before anything is written.
//
// Each exported source is prelude.lua (the argument check and the clock,
// shared by every script) followed by the script's own file, so Redis still
// receives one self-contained script per algorithm.
package lua

import _ "embed"

//go:embed prelude.lua
var prelude string

var (
	//go:embed token_bucket.lua
	tokenBucket string
	//go:embed sliding_window.lua
	slidingWindow string
	//go:embed sliding_log.lua
	slidingLog string
	//go:embed fixed_window.lua
	fixedWindow string
	//go:embed concurrency.lua
	concurrency string
	//go:embed multi.lua
	multi string
)

// TokenBucket is the source of token_bucket.lua: one token-bucket decision.
var TokenBucket = prelude + tokenBucket

// SlidingWindow is the source of sliding_window.lua: one decision by the
// sliding-window counter approximation.
var SlidingWindow = prelude + slidingWindow

// SlidingLog is the source of sliding_log.lua: one exact sliding-window
// decision over a log of spends.
var SlidingLog = prelude + slidingLog

// FixedWindow is the source of fixed_window.lua: one fixed-window decision.
var FixedWindow = prelude + fixedWindow

// Concurrency is the source of concurrency.lua: acquire, release, extend or
// inspect leases on a bounded, weighted in-flight capacity.
var Concurrency = prelude + concurrency

// Multi is the source of multi.lua: one all-or-nothing decision over several
// quotas of one identity.
var Multi = prelude + multi
