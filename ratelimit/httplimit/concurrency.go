package httplimit

import (
	"context"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// releaseTimeout bounds the Release of a lease after its request ended.
const releaseTimeout = 5 * time.Second

// Concurrency adapts a ratelimit.ConcurrencyLimiter to a Limiter: each
// request holds a lease of its cost (its weight: 1 per request by default)
// while it runs, and a request over the limit gets a 429 whose Retry-After
// is an upper bound (leases are usually released sooner).
//
// The lease is released when the request's context ends, which net/http
// does as soon as the handler returns; a lease whose release fails (Redis
// down) or that is never released (a crash) expires after the lease TTL.
// Pair it with WithQuotaUnit("concurrent-requests"), so that the headers
// say what q counts:
//
//	conc, _ := ratelimit.NewConcurrency(rdb, 4, ratelimit.WithNamespace("gpu"))
//	mw, _ := httplimit.New(httplimit.Concurrency(conc), httplimit.WithPolicyName("gpu"),
//		httplimit.WithQuotaUnit("concurrent-requests"))
func Concurrency(c *ratelimit.ConcurrencyLimiter) Limiter {
	if c == nil {
		return nil // New answers ErrInvalidOption, rather than a panic per request
	}
	return LimiterFunc(func(ctx context.Context, identity string, cost int64) (ratelimit.Result, error) {
		lease, res, err := c.Acquire(ctx, identity, cost)
		if lease != nil && lease.Tracked() {
			context.AfterFunc(ctx, func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
				defer cancel()
				_ = lease.Release(rctx) // on failure the lease expires after its TTL
			})
		}
		return res, err
	})
}
