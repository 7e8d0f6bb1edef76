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
package lua

import _ "embed"

// TokenBucket is the source of token_bucket.lua: one token-bucket decision.
//
//go:embed token_bucket.lua
var TokenBucket string

// SlidingWindow is the source of sliding_window.lua: one decision by the
// sliding-window counter approximation.
//
//go:embed sliding_window.lua
var SlidingWindow string

// SlidingLog is the source of sliding_log.lua: one exact sliding-window
// decision over a log of spends.
//
//go:embed sliding_log.lua
var SlidingLog string

// FixedWindow is the source of fixed_window.lua: one fixed-window decision.
//
//go:embed fixed_window.lua
var FixedWindow string

// Concurrency is the source of concurrency.lua: acquire, release, extend or
// inspect leases on a bounded, weighted in-flight capacity.
//
//go:embed concurrency.lua
var Concurrency string

// Multi is the source of multi.lua: one all-or-nothing decision over several
// quotas of one identity.
//
//go:embed multi.lua
var Multi string
