package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLeaseLost is returned by Lease.Extend, and is the cause of the context
// returned by Lease.KeepAlive, when the lease is no longer held: it expired
// (its TTL passed without an extension) or was released. Its capacity may
// already be someone else's; the work it guarded should stop.
var ErrLeaseLost = errors.New("ratelimit: lease lost")

// ConcurrencyLimiter bounds work in flight per identity, rather than its
// rate: at most Max units of weight held at once, for GPU jobs, long
// inference requests, exports. Acquire takes a Lease of some weight (1 for a
// request; GPU memory units for a job) or is denied; Release gives it back.
//
// A lease lasts the lease TTL (WithLeaseTTL, default DefaultLeaseTTL) unless
// extended (Extend, or KeepAlive for long jobs), so the capacity of a holder
// that crashed comes back after at most the TTL: every call drops expired
// leases first, and the identity's keys expire with its last lease. Leases
// live in Redis, shared by every process using the same namespace.
//
// Each Acquire is a decision, published on the bus with Algorithm
// Concurrency and Cost the weight; its Result.Limit is Limit{Rate: Max, Per:
// lease TTL}, Remaining the weight still free. Releases and extensions are
// not decisions and are not published.
//
// A ConcurrencyLimiter is safe for concurrent use. Create it once with
// NewConcurrency and share it.
type ConcurrencyLimiter struct {
	e              *engine
	keys           *keyer
	max            int64
	ttl            time.Duration
	argMax, argTTL any
}

// NewConcurrency returns a ConcurrencyLimiter allowing at most max units in
// flight per identity, on Redis through client. It accepts the options of
// New except WithAlgorithm, plus WithLeaseTTL. max must be between 1 and
// 2^53-1 (ErrInvalidLimit otherwise).
func NewConcurrency(client redis.UniversalClient, max int64, opts ...Option) (*ConcurrencyLimiter, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	cfg, err := newConfig(forConcurrency, opts)
	if err != nil {
		return nil, err
	}
	if err := checkMax(max); err != nil {
		return nil, err
	}
	if cfg.leaseTTL == 0 {
		cfg.leaseTTL = DefaultLeaseTTL
	}
	c := &ConcurrencyLimiter{
		e:    newEngine(client, cfg, Concurrency),
		keys: newKeyer(cfg.namespace+":"+Concurrency.String()+":", cfg.secret),
		ttl:  cfg.leaseTTL,
	}
	c.setMax(max)
	return c, nil
}

func checkMax(max int64) error {
	if max < 1 || max > maxExact {
		return fmt.Errorf("%w: max in flight %d must be between 1 and 2^53-1", ErrInvalidLimit, max)
	}
	return nil
}

func (c *ConcurrencyLimiter) setMax(max int64) {
	c.max, c.argMax, c.argTTL = max, max, c.ttl.Microseconds()
}

// limit is what a Result of the limiter reports as its Limit: Max units per
// lease TTL.
func (c *ConcurrencyLimiter) limit() Limit { return Limit{Rate: c.max, Per: c.ttl} }

// WithMax returns a ConcurrencyLimiter that allows max units in flight
// instead of c's own and shares everything else with c, including the
// leases: the per-call override for plans and tiers. Lowering max revokes
// nothing; it denies new leases until enough are released or expire.
func (c *ConcurrencyLimiter) WithMax(max int64) (*ConcurrencyLimiter, error) {
	if err := checkMax(max); err != nil {
		return nil, err
	}
	view := *c
	view.setMax(max)
	return &view, nil
}

// Max returns the most units in flight per identity.
func (c *ConcurrencyLimiter) Max() int64 { return c.max }

// LeaseTTL returns how long a lease lasts unless extended.
func (c *ConcurrencyLimiter) LeaseTTL() time.Duration { return c.ttl }

// Namespace returns the limiter's namespace.
func (c *ConcurrencyLimiter) Namespace() string { return c.e.cfg.namespace }

// Key returns the Redis key of identity's leases (a sorted set; a second key,
// Key + ":meta", holds their total weight).
func (c *ConcurrencyLimiter) Key(identity string) (string, error) { return c.keys.key(identity) }

// leaseKeys returns the keys of the leases under key: the sorted set and
// its summary.
func leaseKeys(key string) []string { return []string{key, key + metaSuffix} }

// leaseOp is an operation of concurrency.lua (its ARGV[5]).
type leaseOp uint8

const (
	opPeek    leaseOp = 0
	opAcquire leaseOp = 1
	opRelease leaseOp = 2
	opExtend  leaseOp = 3
)

// Acquire takes a lease of weight units of identity's capacity if they are
// free, and returns it; the lease must be released (Release, typically
// deferred) or it holds its weight until it expires.
//
// A denial is a nil Lease and a Result with Allowed false, whose RetryAfter
// is when enough leases will have expired (sooner if they are released).
// The error is nil for every decision Redis made. It wraps ErrInvalidCost
// for a weight below 1 or above Max, or ErrInvalidIdentity, before anything
// is decided. It is a *BackendError when Redis failed: then FailOpen returns
// a Lease that is not recorded in Redis (Release and Extend do nothing) and
// FailClosed a nil Lease. In shadow mode a lease over capacity is granted
// the same way, untracked, with Reason ReasonShadow.
func (c *ConcurrencyLimiter) Acquire(ctx context.Context, identity string, weight int64) (*Lease, Result, error) {
	if weight < 1 || weight > c.max {
		return nil, Result{}, fmt.Errorf("%w: weight %d must be between 1 and max in flight %d", ErrInvalidCost, weight, c.max)
	}
	key, err := c.keys.key(identity)
	if err != nil {
		return nil, Result{}, err
	}
	lease := &Lease{c: c, keys: leaseKeys(key), id: newID(), weight: weight}
	start := c.e.startTimer()
	res, berr := c.run(ctx, lease.keys, lease.id, weight, opAcquire)
	lease.tracked = berr == nil && res.Allowed
	res, err = c.e.finish(ctx, decided{alg: Concurrency, key: key, cost: weight, limit: c.limit()}, start, res, berr)
	if !res.Allowed {
		lease = nil
	}
	return lease, res, err
}

// Peek returns what Acquire of weight 1 would decide now, without taking
// anything and without publishing an event. On a backend failure the Result
// is the fail strategy's.
func (c *ConcurrencyLimiter) Peek(ctx context.Context, identity string) (Result, error) {
	key, err := c.keys.key(identity)
	if err != nil {
		return Result{}, err
	}
	res, berr := c.run(ctx, leaseKeys(key), "0", 1, opPeek)
	if berr != nil {
		return c.e.failResult(ctx, c.limit()), berr
	}
	return res, nil
}

// Reset drops every lease of identity: their holders' Extend then reports
// ErrLeaseLost. For operators; not needed to recover from crashed holders,
// whose leases expire on their own.
func (c *ConcurrencyLimiter) Reset(ctx context.Context, identity string) error {
	key, err := c.keys.key(identity)
	if err != nil {
		return err
	}
	return c.e.del(ctx, leaseKeys(key))
}

// run calls concurrency.lua and reads the reply.
func (c *ConcurrencyLimiter) run(ctx context.Context, keys []string, id string, weight int64, op leaseOp) (Result, *BackendError) {
	reply, err := c.e.script(ctx, concurrencyScript, keys, c.argMax, c.argTTL, id, weight, int64(op), c.e.nowArg())
	if err != nil {
		return Result{}, err
	}
	if len(reply) != 5 {
		return Result{}, newBackendError(fmt.Errorf("ratelimit: unexpected script reply of %d integers", len(reply)))
	}
	return Result{
		Allowed:    reply[0] == 1,
		Reason:     ReasonQuota,
		Limit:      c.limit(),
		Remaining:  reply[1],
		RetryAfter: durationUS(reply[2]),
		ResetAfter: durationUS(reply[3]),
		Time:       time.UnixMicro(reply[4]),
	}, nil
}

// newID returns 128 random bits in hex, for lease and refund ids:
// unguessable, so that no one can release or extend a lease they were not
// given, and unique without coordination. (crypto/rand.Read does not fail.)
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Lease is weight units of an identity's capacity held by one holder, from
// ConcurrencyLimiter.Acquire. Release it when the work is done; Extend it (or
// run KeepAlive) when the work may outlast the lease TTL.
//
// A Lease is safe for concurrent use; Release and Extend may race (an
// Extend after the Release reports ErrLeaseLost).
type Lease struct {
	c       *ConcurrencyLimiter
	keys    []string
	id      string
	weight  int64
	tracked bool // false: granted by FailOpen or shadow mode, not in Redis
}

// ID returns the lease id: 32 hex digits from crypto/rand.
func (l *Lease) ID() string { return l.id }

// Weight returns the units the lease holds.
func (l *Lease) Weight() int64 { return l.weight }

// Tracked reports whether the lease is recorded in Redis. It is false for a
// lease granted by FailOpen or by shadow mode over capacity: Release and
// Extend of such a lease do nothing.
func (l *Lease) Tracked() bool { return l.tracked }

// Release gives the lease's weight back at once. It is idempotent: releasing
// a lease that was already released, or that expired, does nothing and
// returns nil. The error is a *BackendError when Redis failed; the lease then
// expires at the latest after its TTL. Release with a context of its own
// (not one already canceled), typically:
//
//	defer lease.Release(context.WithoutCancel(ctx))
func (l *Lease) Release(ctx context.Context) error {
	if l == nil || !l.tracked {
		return nil
	}
	if _, err := l.c.run(ctx, l.keys, l.id, l.weight, opRelease); err != nil {
		return err
	}
	return nil
}

// Extend pushes the lease's expiry to the lease TTL from now (Redis TIME).
// It returns ErrLeaseLost when the lease expired or was released before, and
// a *BackendError when Redis failed (the lease may still be held: try again
// before it expires).
func (l *Lease) Extend(ctx context.Context) error {
	if l == nil || !l.tracked {
		return nil
	}
	res, err := l.c.run(ctx, l.keys, l.id, l.weight, opExtend)
	if err != nil {
		return err
	}
	if !res.Allowed {
		return ErrLeaseLost
	}
	return nil
}

// KeepAlive extends the lease every interval (a third of the lease TTL when
// interval <= 0 or above half the TTL, which could let the lease expire
// between two extensions) until the returned stop function is called or ctx ends, and
// returns a context derived from ctx that is canceled, with cause
// ErrLeaseLost, if the lease is lost: run the guarded work under it. A
// failed extension (Redis down) is retried at the next tick; the lease is
// lost only when Redis says so. stop waits for the extending goroutine to
// end; call it (typically deferred) before Release.
func (l *Lease) KeepAlive(ctx context.Context, interval time.Duration) (leaseCtx context.Context, stop func()) {
	leaseCtx, cancel := context.WithCancelCause(ctx)
	if l == nil || !l.tracked {
		return leaseCtx, func() { cancel(context.Canceled) }
	}
	if interval <= 0 || interval > l.c.ttl/2 {
		// An interval near the TTL would let the lease expire between
		// two extensions.
		interval = l.c.ttl / 3
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-leaseCtx.Done():
				return
			case <-ticker.C:
				if err := l.Extend(leaseCtx); errors.Is(err, ErrLeaseLost) {
					cancel(ErrLeaseLost)
					return
				}
			}
		}
	}()
	return leaseCtx, func() {
		cancel(context.Canceled)
		<-done
	}
}
