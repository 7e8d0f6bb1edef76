package ratelimit

import (
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// Algorithm selects how a Limiter counts. Every algorithm decides in one Lua
// script on Redis, timed by Redis TIME.
type Algorithm uint8

const (
	// TokenBucket (the default) refills a bucket of Burst tokens
	// continuously at Rate per Per; a call of cost n takes n tokens. It
	// allows bursts up to Burst and a long-run average of Rate per Per.
	// State: one small hash per identity, O(1) per call.
	TokenBucket Algorithm = iota
)

var algorithmNames = [...]string{"token_bucket"}

// String returns the algorithm's name as used in keys and labels:
// "token_bucket".
func (a Algorithm) String() string {
	if a.valid() {
		return algorithmNames[a]
	}
	return "unknown"
}

func (a Algorithm) valid() bool { return int(a) < len(algorithmNames) }

// scripts are built once: redis.NewScript hashes the source.
var tokenBucketScript = redis.NewScript(lua.TokenBucket)

func (a Algorithm) script() *redis.Script {
	return tokenBucketScript
}
