// Package testkit holds test helpers shared by the packages of this module:
// a limiter on a fresh embedded Redis (miniredis), for the unit tests of
// the subscribers and middleware that need a limiter but test no script.
// (Scripts are tested on a real redis-server: internal/redistest.)
package testkit

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// MiniTime is the clock of the embedded Redis that MiniLimiter starts.
var MiniTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// MiniLimiter returns a limiter of lim on a fresh miniredis whose clock
// stands at MiniTime, and the miniredis (to stop it, or to move its clock).
// Its client fails fast (no retries, one dial) once the miniredis is
// closed.
func MiniLimiter(t testing.TB, lim ratelimit.Limit, opts ...ratelimit.Option) (*ratelimit.Limiter, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.SetTime(MiniTime)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	l, err := ratelimit.New(c, lim, opts...)
	if err != nil {
		t.Fatalf("ratelimit.New(%v): %v", lim, err)
	}
	return l, mr
}
