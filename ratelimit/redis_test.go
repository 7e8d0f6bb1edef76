package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestConcurrentInstances hammers one identity from two limiter instances
// (two clients, as two processes would) with 50 goroutines each, for a
// bounded time, and checks the total allowed against the token bucket's
// bound measured on Redis's clock: burst + rate × elapsed (+1 for the token
// being refilled at the edges).
func TestConcurrentInstances(t *testing.T) {
	srv := redistestStart(t)
	ctx := context.Background()
	// The burst covers half a second of refill: a shared CI machine that
	// stalls the test for less than that loses no tokens, so "close to the
	// bound" holds under load, while any over-admission still shows.
	lim := PerSecond(200).WithBurst(100)
	const (
		instances  = 2
		goroutines = 50
		runFor     = 1500 * time.Millisecond
	)
	var limiters []*Limiter
	for range instances {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: goroutines})
		t.Cleanup(func() { _ = c.Close() })
		// FailClosed and a generous timeout: an overloaded test machine
		// must not turn into admissions the bound does not cover.
		limiters = append(limiters, mustNew(t, c, lim, WithFailStrategy(FailClosed), WithTimeout(2*time.Second)))
	}
	admin := srv.Client(t)
	before, err := admin.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var allowed, denied, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(runFor)
	for _, l := range limiters {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for calls := 0; calls < 100000 && time.Now().Before(stop); calls++ {
					res, err := l.Allow(ctx, "hot-identity")
					switch {
					case err != nil:
						failed.Add(1)
					case res.Allowed:
						allowed.Add(1)
					default:
						denied.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	after, err := admin.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	elapsed := after.Sub(before)
	bound := lim.Capacity() + int64(float64(lim.Rate)*elapsed.Seconds()) + 1
	got := allowed.Load()
	t.Logf("allowed %d, denied %d, failed %d over %v of Redis TIME; bound %d (%.1f%% of bound)",
		got, denied.Load(), failed.Load(), elapsed, bound, 100*float64(got)/float64(bound))
	if failed.Load() != 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if got > bound {
		t.Fatalf("over-admission: allowed %d > bound %d", got, bound)
	}
	if float64(got) < 0.9*float64(bound) {
		t.Fatalf("allowed %d is under 90%% of bound %d: the limiter under-admits (or the load was too light: %d denied)", got, bound, denied.Load())
	}
}

// TestNoRawIdentityInRedis scans every key and value Redis holds after
// decisions on guessable identities, with and without an HMAC key.
func TestNoRawIdentityInRedis(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	identities := []string{"alice@example.com", "203.0.113.7", "user:12345", "sk_live_abcdef"}
	plain := mustNew(t, c, PerMinute(10), WithNamespace("plain"))
	keyed := mustNew(t, c, PerMinute(10), WithNamespace("keyed"), WithIdentityKey([]byte("0123456789abcdef-secret")))
	for _, l := range []*Limiter{plain, keyed} {
		for _, id := range identities {
			if res, err := l.AllowN(ctx, id, 3); err != nil || !res.Allowed {
				t.Fatalf("AllowN(%q): %+v %v", id, res, err)
			}
		}
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2*len(identities) {
		t.Fatalf("got %d keys, want %d: %v", len(keys), 2*len(identities), keys)
	}
	for k, v := range snapshot(t, c) {
		all := k + " " + v
		for _, id := range identities {
			if strings.Contains(all, id) {
				t.Errorf("raw identity %q in Redis: %s", id, all)
			}
		}
	}
	// Key format, and HMAC keys differ from plain ones.
	pk, _ := plain.Key("alice@example.com")
	kk, _ := keyed.Key("alice@example.com")
	if !strings.HasPrefix(pk, "plain:token_bucket:{") || !strings.HasSuffix(pk, "}") || len(pk) != len("plain:token_bucket:{}")+64 {
		t.Errorf("plain key %q is not <ns>:<alg>:{<64 hex>}", pk)
	}
	if pk[len("plain"):] == kk[len("keyed"):] {
		t.Errorf("HMAC key equals the plain SHA-256 key")
	}
	// sha256("alice@example.com"), computed independently.
	const want = "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
	if pk != "plain:token_bucket:{"+want+"}" {
		t.Errorf("plain key %q, want the hex SHA-256 %s", pk, want)
	}
}

// TestRedisDown stops the server mid-test: FailOpen allows, FailClosed
// denies, both return and publish the backend error; after a restart on the
// same port the same limiters decide from Redis again.
func TestRedisDown(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	open := mustNew(t, c, PerMinute(2), WithNamespace("open"), WithBus(bus))
	closed := mustNew(t, c, PerMinute(2), WithNamespace("closed"), WithBus(bus), WithFailStrategy(FailClosed))

	for _, l := range []*Limiter{open, closed} {
		if res, err := l.AllowN(ctx, "u", 2); err != nil || !res.Allowed || res.Reason != ReasonQuota {
			t.Fatalf("%s before the outage: %+v %v", l.Namespace(), res, err)
		}
	}
	srv.Stop()

	res, err := open.Allow(ctx, "u")
	var be *BackendError
	// go-redis retries a refused dial with backoff, so the call ends on
	// either the refusal or the backend timeout, whichever comes first.
	if !errors.As(err, &be) || !errors.Is(err, ErrBackend) || (be.Type != ErrorConnection && be.Type != ErrorTimeout) {
		t.Fatalf("fail-open error %v (%T), want a connection or timeout *BackendError", err, err)
	}
	if !res.Allowed || res.Reason != ReasonFailOpen || !(res.Reason == ReasonFailOpen) {
		t.Fatalf("fail-open result %+v", res)
	}
	res, err = closed.Allow(ctx, "u")
	if !errors.Is(err, ErrBackend) || res.Allowed || res.Reason != ReasonFailClosed {
		t.Fatalf("fail-closed: %+v %v", res, err)
	}
	events := rec.all()
	if len(events) != 4 {
		t.Fatalf("%d events, want 4 (one per decision)", len(events))
	}
	for _, e := range events[2:] {
		if !errors.Is(e.Err, ErrBackend) || e.Result.Reason == ReasonQuota {
			t.Errorf("outage event %+v lacks the error or the fail reason", e)
		}
	}

	srv.Restart() // empty: no data, no script cache
	for _, l := range []*Limiter{open, closed} {
		var res Result
		var err error
		// go-redis drops the dead connections on first use; a few calls
		// may still fail before a fresh connection is dialled.
		for attempt := 0; attempt < 20; attempt++ {
			if res, err = l.AllowN(ctx, "u", 2); err == nil {
				break
			}
		}
		if err != nil || !res.Allowed || res.Reason != ReasonQuota {
			t.Fatalf("%s after restart: %+v %v", l.Namespace(), res, err)
		}
		if res, err = l.Allow(ctx, "u"); err != nil || res.Allowed || res.Reason != ReasonQuota {
			t.Fatalf("%s after restart, quota spent: %+v %v", l.Namespace(), res, err)
		}
	}
}

// TestScriptFlush empties Redis's script cache between two calls: the next
// call reloads the script (EVALSHA, NOSCRIPT, EVAL) without an error.
func TestScriptFlush(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	l := mustNew(t, c, PerMinute(10))
	if _, err := l.Allow(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.ScriptExists(ctx, decideScript.Hash()).Result(); ok[0] {
		t.Fatal("script still cached after SCRIPT FLUSH")
	}
	res, err := l.Allow(ctx, "u")
	if err != nil || !res.Allowed || res.Remaining != 8 {
		t.Fatalf("after SCRIPT FLUSH: %+v %v", res, err)
	}
}

// TestGuardedTimeout: a client without ContextTimeoutEnabled ignores
// deadlines on its socket; the limiter still returns within its timeout when
// Redis hangs.
func TestGuardedTimeout(t *testing.T) {
	srv := redistestStart(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	l := mustNew(t, c, PerMinute(10), WithTimeout(50*time.Millisecond), WithFailStrategy(FailClosed))
	if l.e.direct {
		t.Fatal("a client without ContextTimeoutEnabled was taken as honouring deadlines")
	}
	ctx := context.Background()
	if _, err := l.Allow(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	res, err := l.Allow(ctx, "u")
	took := time.Since(start)
	var be *BackendError
	if !errors.As(err, &be) || be.Type != ErrorTimeout || res.Allowed {
		t.Fatalf("paused Redis: %+v %v, want a timeout and a fail-closed denial", res, err)
	}
	// Not a timing assertion on speed: a 2 s ReadTimeout would be reached
	// only if the guard did not work.
	if took >= time.Second {
		t.Fatalf("Allow took %v against a paused Redis with a 50ms timeout", took)
	}
	// Reset deletes with the same guard.
	start = time.Now()
	err = l.Reset(ctx, "u")
	if took := time.Since(start); !errors.As(err, &be) || be.Type != ErrorTimeout || took >= time.Second {
		t.Fatalf("Reset on a paused Redis: %v after %v, want a timeout within the 50ms backend timeout", err, took)
	}
}
