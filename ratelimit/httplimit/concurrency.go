package httplimit

import (
	"context"
	"sync"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// releaseTimeout bounds the Release of a lease after its request ended.
const releaseTimeout = 5 * time.Second

// Concurrency adapts a ratelimit.ConcurrencyLimiter to a Limiter: each
// request holds a lease of its cost (its weight: 1 per request by default)
// while its handler runs, and a request over the limit gets a 429 whose
// Retry-After is an upper bound (leases are usually released sooner).
//
// Behind a Middleware the lease lives exactly as long as the handler: it
// is extended while the handler runs (so a handler may outlast the lease
// TTL) and released when it returns, also when the client went away
// earlier (a GPU job does not stop because its client did). A lease whose
// release fails (Redis down) or that is never released (a crash) expires
// after the lease TTL. With Admit, call the Decision's Release when the
// work is done. Called directly, its AllowN releases the lease when ctx
// ends. Pair it with WithQuotaUnit("concurrent-requests"), so that the
// headers say what q counts:
//
//	conc, _ := ratelimit.NewConcurrency(rdb, 4, ratelimit.WithNamespace("gpu"))
//	mw, _ := httplimit.New(httplimit.Concurrency(conc), httplimit.WithPolicyName("gpu"),
//		httplimit.WithQuotaUnit("concurrent-requests"))
func Concurrency(c *ratelimit.ConcurrencyLimiter) Limiter {
	if c == nil {
		return nil // New answers ErrInvalidOption, rather than a panic per request
	}
	return concurrency{c}
}

type concurrency struct{ c *ratelimit.ConcurrencyLimiter }

// AllowN takes a lease and releases it when ctx ends.
func (c concurrency) AllowN(ctx context.Context, identity string, cost int64) (ratelimit.Result, error) {
	res, release, err := c.hold(ctx, identity, cost)
	if release != nil {
		context.AfterFunc(ctx, release)
	}
	return res, err
}

// hold takes a lease, keeps it alive, and returns the function that stops
// doing so and releases it (once), or nil when no lease was granted in
// Redis.
func (c concurrency) hold(ctx context.Context, identity string, cost int64) (ratelimit.Result, func(), error) {
	lease, res, err := c.c.Acquire(ctx, identity, cost)
	if lease == nil || !lease.Tracked() {
		return res, nil, err
	}
	// The lease outlives the request's context: extend and release it on
	// one that the client going away does not cancel.
	keep := context.WithoutCancel(ctx)
	_, stop := lease.KeepAlive(keep, 0)
	var once sync.Once
	return res, func() {
		once.Do(func() {
			stop()
			rctx, cancel := context.WithTimeout(keep, releaseTimeout)
			defer cancel()
			_ = lease.Release(rctx) // on failure the lease expires after its TTL
		})
	}, err
}
