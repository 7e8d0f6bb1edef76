package ratelimit

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func mustNewConcurrency(t testing.TB, c redis.UniversalClient, max int64, opts ...Option) *ConcurrencyLimiter {
	t.Helper()
	l, err := NewConcurrency(c, max, opts...)
	if err != nil {
		t.Fatalf("NewConcurrency(%d): %v", max, err)
	}
	return l
}

func wantResult(t *testing.T, what string, res Result, allowed bool, remain int64, retry, reset time.Duration) {
	t.Helper()
	if res.Allowed != allowed || res.Remaining != remain || res.RetryAfter != retry || res.ResetAfter != reset {
		t.Errorf("%s: got allowed=%v remaining=%d retry=%v reset=%v, want %v %d %v %v",
			what, res.Allowed, res.Remaining, res.RetryAfter, res.ResetAfter, allowed, remain, retry, reset)
	}
}

// TestConcurrencyTable runs leases through acquire, denial, release,
// a crashed holder, extension and expiry, on the test clock.
func TestConcurrencyTable(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			rec := &recorder{}
			c := mustNewConcurrency(t, b.client, 4, append(b.opts, WithLeaseTTL(10*time.Second), WithSubscribers(rec))...)
			const id = "tenant:gpu"
			key, _ := c.Key(id)
			acquire := func(what string, w int64, allowed bool, remain int64, retry, reset time.Duration) *Lease {
				t.Helper()
				lease, res, err := c.Acquire(ctx, id, w)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				wantResult(t, what, res, allowed, remain, retry, reset)
				if (lease != nil) != allowed {
					t.Fatalf("%s: lease %v with allowed=%v", what, lease, allowed)
				}
				if res.Limit != (Limit{Rate: 4, Per: 10 * time.Second}) || res.Reason != ReasonQuota {
					t.Errorf("%s: limit %v reason %v", what, res.Limit, res.Reason)
				}
				return lease
			}
			peek := func(what string, allowed bool, remain int64, retry, reset time.Duration) {
				t.Helper()
				res, err := c.Peek(ctx, id)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				wantResult(t, what, res, allowed, remain, retry, reset)
			}

			a := acquire("first, weight 2", 2, true, 2, 0, 10*time.Second)
			b.advance(time.Second)
			bl := acquire("second, weight 2", 2, true, 0, 0, 10*time.Second)
			// Full: the soonest lease (a) expires 9 s from now.
			acquire("over max", 1, false, 0, 9*time.Second, 10*time.Second)
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			peek("after release", true, 2, 0, 10*time.Second)
			if err := a.Release(ctx); err != nil {
				t.Fatalf("second release: %v", err)
			}
			peek("release is idempotent", true, 2, 0, 10*time.Second)
			if err := a.Extend(ctx); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("extend after release: %v, want ErrLeaseLost", err)
			}
			acquire("weight 3 with 2 held", 3, false, 2, 10*time.Second, 10*time.Second)

			// The holder of bl crashes: it never releases. Its lease
			// expires exactly TTL after it was taken, and the capacity
			// returns.
			_ = bl
			b.advance(10*time.Second - time.Microsecond)
			peek("just before expiry", true, 2, 0, time.Microsecond)
			b.advance(time.Microsecond)
			cl := acquire("all of max after expiry", 4, true, 0, 0, 10*time.Second)
			b.advance(5 * time.Second)
			if err := cl.Extend(ctx); err != nil {
				t.Fatalf("extend: %v", err)
			}
			b.advance(9 * time.Second)
			peek("extended", false, 0, time.Second, time.Second)
			b.advance(time.Second)
			if err := cl.Extend(ctx); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("extend after expiry: %v, want ErrLeaseLost", err)
			}
			peek("all expired", true, 4, 0, 0)
			if b.exists(key) || b.exists(key+metaSuffix) {
				t.Fatalf("keys left after every lease expired")
			}
			if err := cl.Release(ctx); err != nil {
				t.Fatalf("release of an expired lease: %v", err)
			}

			// Only acquisitions are decisions: 5 events.
			events := rec.all()
			if len(events) != 5 {
				t.Fatalf("%d events, want 5", len(events))
			}
			for _, e := range events {
				if e.Algorithm != Concurrency || e.Key != key || e.Err != nil {
					t.Errorf("event %+v", e)
				}
			}
			if events[0].Cost != 2 || !events[0].Result.Allowed || events[2].Result.Allowed {
				t.Errorf("events %+v", events)
			}
		})
	}
}

func TestLeaseIDs(t *testing.T) {
	b := miniBackend(t)
	c := mustNewConcurrency(t, b.client, 1000, b.opts...)
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 200 {
		lease, _, err := c.Acquire(context.Background(), "u", 1)
		if err != nil || lease == nil {
			t.Fatalf("acquire: %v %v", lease, err)
		}
		if !hex32.MatchString(lease.ID()) || seen[lease.ID()] {
			t.Fatalf("lease id %q is not fresh 128-bit hex", lease.ID())
		}
		seen[lease.ID()] = true
	}
}

func TestConcurrencyWithMax(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			free := mustNewConcurrency(t, b.client, 1, b.opts...)
			pro, err := free.WithMax(3)
			if err != nil {
				t.Fatal(err)
			}
			if _, res, _ := free.Acquire(ctx, "u", 1); !res.Allowed {
				t.Fatal("free tier: first lease denied")
			}
			if _, res, _ := free.Acquire(ctx, "u", 1); res.Allowed {
				t.Fatal("free tier: second lease allowed")
			}
			// The same identity's leases count against the upgraded max.
			_, res, err := pro.Acquire(ctx, "u", 2)
			if err != nil || !res.Allowed || res.Remaining != 0 || res.Limit.Rate != 3 {
				t.Fatalf("pro tier: %+v %v", res, err)
			}
			if _, err := free.WithMax(0); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("WithMax(0): %v", err)
			}
		})
	}
}

// TestLeaseRealExpiry uses Redis TIME and real key expiry: a crashed
// holder's capacity returns after the TTL, and the keys vanish.
func TestLeaseRealExpiry(t *testing.T) {
	srv := redistestStart(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	c := mustNewConcurrency(t, rdb, 2, WithLeaseTTL(50*time.Millisecond))
	key, _ := c.Key("crash")
	if _, res, err := c.Acquire(ctx, "crash", 2); err != nil || !res.Allowed {
		t.Fatalf("acquire: %+v %v", res, err)
	}
	// The holder "crashes": the lease is dropped without Release.
	// -1 is a key without a TTL; -2 (already expired, on a slow machine)
	// is fine.
	if pttl := rdb.PTTL(ctx, key).Val(); pttl == -1 || pttl > 50*time.Millisecond {
		t.Fatalf("PTTL of the leases %v, want a TTL of at most 50ms", pttl)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Exists(ctx, key, key+metaSuffix).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lease keys still there 5s after a 50ms TTL")
		}
		time.Sleep(time.Millisecond)
	}
	if _, res, err := c.Acquire(ctx, "crash", 2); err != nil || !res.Allowed {
		t.Fatalf("capacity did not return after expiry: %+v %v", res, err)
	}
}

// TestKeepAlive holds a lease well past its TTL by extending it, then loses
// it when it is taken away.
func TestKeepAlive(t *testing.T) {
	srv := redistestStart(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	// Twenty extensions per TTL: a loaded CI machine (the whole package
	// runs in parallel under -race) may delay many of them.
	const ttl = time.Second
	c := mustNewConcurrency(t, rdb, 1, WithLeaseTTL(ttl), WithTimeout(time.Second))
	lease, res, err := c.Acquire(ctx, "job", 1)
	if err != nil || !res.Allowed {
		t.Fatalf("acquire: %+v %v", res, err)
	}
	leaseCtx, stop := lease.KeepAlive(ctx, ttl/20)
	defer stop()
	// Hold it for 2 TTLs of Redis's clock.
	start, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for {
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if now.Sub(start) > 2*ttl {
			break
		}
		if leaseCtx.Err() != nil {
			t.Fatalf("lease lost while kept alive: %v", context.Cause(leaseCtx))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if res, _ := c.Peek(ctx, "job"); res.Allowed {
		t.Fatal("capacity free while the lease was kept alive")
	}
	// An operator resets the identity: the keep-alive notices and cancels.
	if err := c.Reset(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leaseCtx.Done():
		if !errors.Is(context.Cause(leaseCtx), ErrLeaseLost) {
			t.Fatalf("cause %v, want ErrLeaseLost", context.Cause(leaseCtx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("keep-alive did not notice the lost lease within 5s")
	}
	stop()
	stop() // idempotent
}

// TestConcurrencyInFlight hammers one identity from two limiter instances
// (two clients) with many goroutines holding weighted leases, and checks
// that the weight held at once, counted on the client side while each lease
// is held in Redis, never passes max; and that nothing leaks afterwards.
func TestConcurrencyInFlight(t *testing.T) {
	srv := redistestStart(t)
	ctx := context.Background()
	const (
		max        = 5
		goroutines = 30
		runFor     = 700 * time.Millisecond
	)
	var limiters []*ConcurrencyLimiter
	for range 2 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: goroutines})
		t.Cleanup(func() { _ = c.Close() })
		limiters = append(limiters, mustNewConcurrency(t, c, max, WithFailStrategy(FailClosed), WithTimeout(2*time.Second)))
	}
	var inFlight, peak, acquired, denied, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(runFor)
	for g := range 2 * goroutines {
		c := limiters[g%2]
		weight := int64(1 + g%2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for calls := 0; calls < 10000 && time.Now().Before(stop); calls++ {
				lease, res, err := c.Acquire(ctx, "hot", weight)
				switch {
				case err != nil:
					failed.Add(1)
					continue
				case !res.Allowed:
					denied.Add(1)
					continue
				}
				acquired.Add(1)
				now := inFlight.Add(weight)
				for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
				}
				runtime.Gosched() // hold the lease while others run
				inFlight.Add(-weight)
				if err := lease.Release(ctx); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("acquired %d, denied %d, failed %d, peak weight in flight %d (max %d)",
		acquired.Load(), denied.Load(), failed.Load(), peak.Load(), max)
	if failed.Load() != 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if peak.Load() > max {
		t.Fatalf("peak in flight %d > max %d", peak.Load(), max)
	}
	if acquired.Load() == 0 || denied.Load() == 0 {
		t.Fatalf("the load did not contend: %d acquired, %d denied", acquired.Load(), denied.Load())
	}
	key, _ := limiters[0].Key("hot")
	if n := srv.Client(t).Exists(ctx, key, key+metaSuffix).Val(); n != 0 {
		t.Fatalf("%d lease keys left after every lease was released", n)
	}
}

// TestKeepAliveLongInterval: an interval longer than the lease TTL does not
// let the lease expire: KeepAlive extends it every third of the TTL
// instead.
func TestKeepAliveLongInterval(t *testing.T) {
	srv := redistestStart(t)
	c := mustNewConcurrency(t, srv.Client(t), 1, WithLeaseTTL(100*time.Millisecond))
	ctx := context.Background()
	lease, res, err := c.Acquire(ctx, "job", 1)
	if err != nil || lease == nil || !res.Allowed {
		t.Fatalf("Acquire: %+v %v", res, err)
	}
	leaseCtx, stop := lease.KeepAlive(ctx, time.Hour)
	defer stop()
	time.Sleep(400 * time.Millisecond) // four lease TTLs pass: the subject of the test, not a synchronisation
	if leaseCtx.Err() != nil {
		t.Fatalf("lease lost: %v", context.Cause(leaseCtx))
	}
	if res, err := c.Peek(ctx, "job"); err != nil || res.Remaining != 0 {
		t.Fatalf("after four TTLs with KeepAlive the lease is gone: %+v %v", res, err)
	}
	stop()
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
