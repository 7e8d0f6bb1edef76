// Package lua holds the Redis Lua scripts of the rate limiter, embedded in the
// binary. The scripts live in their own directory (and package) because
// go:embed cannot reach a parent directory, and because they are the contract
// with Redis: reviewing one file shows everything a decision does.
//
// Every script follows the same rules: all keys through KEYS, time from Redis
// TIME, integer microsecond arithmetic (exact in a Lua double), an all-integer
// reply, state written with a TTL, O(1) work.
package lua

import _ "embed"

// TokenBucket is the source of token_bucket.lua: one token-bucket decision.
//
//go:embed token_bucket.lua
var TokenBucket string
