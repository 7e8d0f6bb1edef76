package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

var windowAlgorithms = []Algorithm{SlidingWindow, SlidingLog, FixedWindow}

var limiterAlgorithms = []Algorithm{TokenBucket, SlidingWindow, SlidingLog, FixedWindow}

// TestShadow: in shadow mode the limit is decided and spent exactly as when
// enforced, but every call is allowed; the would-be denials say so.
func TestShadow(t *testing.T) {
	for _, alg := range limiterAlgorithms {
		for _, b := range backends(t) {
			t.Run(alg.String()+"/"+b.name, func(t *testing.T) {
				ctx := context.Background()
				rec := &recorder{}
				opts := append(b.opts, WithAlgorithm(alg), WithNamespace("rollout"))
				shadow := mustNew(t, b.client, PerMinute(2), append(opts, WithShadow(), WithSubscribers(rec))...)
				enforced := mustNew(t, b.client, PerMinute(2), append(opts, WithNamespace("enforced"))...)
				for i := range 4 {
					s, err := shadow.Allow(ctx, "u")
					if err != nil {
						t.Fatal(err)
					}
					e, err := enforced.Allow(ctx, "u")
					if err != nil {
						t.Fatal(err)
					}
					if !s.Allowed {
						t.Fatalf("call %d: shadow mode denied", i)
					}
					wantReason := ReasonQuota
					if !e.Allowed {
						wantReason = ReasonShadow
					}
					if s.Reason != wantReason || (s.Reason == ReasonShadow) != !e.Allowed {
						t.Errorf("call %d: shadow reason %v, enforced allowed=%v", i, s.Reason, e.Allowed)
					}
					// Same state, same numbers: shadow mode spends what
					// enforcement would.
					if s.Remaining != e.Remaining || s.RetryAfter != e.RetryAfter || s.ResetAfter != e.ResetAfter {
						t.Errorf("call %d: shadow %+v, enforced %+v", i, s, e)
					}
				}
				events := rec.all()
				if len(events) != 4 {
					t.Fatalf("%d events, want 4", len(events))
				}
				for i, e := range events {
					shadowed := i >= 2
					if !e.Result.Allowed || (e.Result.Reason == ReasonShadow) != shadowed || e.Algorithm != alg {
						t.Errorf("event %d: %+v", i, e)
					}
					if shadowed && (e.Result.RetryAfter <= 0 || e.Result.Reason.String() != "shadow") {
						t.Errorf("event %d: a shadowed denial without its retry-after: %+v", i, e.Result)
					}
				}
			})
		}
	}
}

func TestShadowMultiAndConcurrency(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			m := mustNewMulti(t, b.client, []Quota{{Name: "a", Limit: PerMinute(1)}, {Name: "b", Limit: PerHour(5), Algorithm: FixedWindow}}, append(b.opts, WithShadow())...)
			for i := range 3 {
				res, err := m.Allow(ctx, "u")
				if err != nil || !res.Allowed || (res.Reason == ReasonShadow) != (i > 0) {
					t.Fatalf("multi call %d: %+v %v", i, res, err)
				}
				if i > 0 && (res.Quota != "a" || res.Quotas[0].Allowed || res.Quotas[1].Remaining != 4) {
					t.Fatalf("multi call %d: the would-be denial is not shown, or b was spent: %+v", i, res)
				}
			}
			c := mustNewConcurrency(t, b.client, 1, append(b.opts, WithShadow())...)
			held, _, err := c.Acquire(ctx, "u", 1)
			if err != nil || held == nil || !held.Tracked() {
				t.Fatalf("first lease: %v %v", held, err)
			}
			over, res, err := c.Acquire(ctx, "u", 1)
			if err != nil || over == nil || !(res.Reason == ReasonShadow) || over.Tracked() {
				t.Fatalf("shadow lease over max: %v %+v %v", over, res, err)
			}
			// An untracked lease is inert: nothing to release or extend.
			if err := over.Extend(ctx); err != nil {
				t.Fatal(err)
			}
			if err := over.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if res, _ := c.Peek(ctx, "u"); res.Remaining != 0 {
				t.Fatalf("releasing the shadow lease freed capacity: %+v", res)
			}
		})
	}
}

// TestWithLimit moves one identity between plans on every algorithm; the
// state carries over as documented on WithLimit.
func TestWithLimit(t *testing.T) {
	cases := []struct {
		alg   Algorithm
		steps []astep
	}{
		{FixedWindow, []astep{
			{cost: 8, allowed: true, remain: 2, reset: 55 * time.Second},
			// upgrade: the 8 spent still count against 20
			{limit: PerMinute(20), cost: 12, allowed: true, remain: 0, reset: 55 * time.Second},
			// downgrade: 20 spent count as the whole 5
			{limit: PerMinute(5), op: "peek", allowed: false, remain: 0, retry: 55 * time.Second, reset: 55 * time.Second},
			// another Per: the minute window lies inside this hour window
			{limit: PerHour(100), op: "peek", allowed: true, remain: 80, reset: 55*time.Minute + 55*time.Second},
			{limit: PerHour(100), cost: 80, allowed: true, remain: 0, reset: 55*time.Minute + 55*time.Second},
		}},
		{SlidingWindow, []astep{
			{cost: 8, allowed: true, remain: 2, reset: 115 * time.Second},
			{limit: PerMinute(20), cost: 12, allowed: true, remain: 0, reset: 115 * time.Second},
			{limit: PerMinute(5), op: "peek", allowed: false, remain: 0, retry: 55*time.Second + 12*time.Second, reset: 115 * time.Second},
			// another Per: the estimate (20) carries over as spent in the
			// current hour window
			{limit: PerHour(100), op: "peek", allowed: true, remain: 80, reset: 2*time.Hour - 4*time.Minute - 5*time.Second},
		}},
		{SlidingLog, []astep{
			{cost: 8, allowed: true, remain: 2, reset: time.Minute},
			{limit: PerMinute(20), cost: 12, allowed: true, remain: 0, reset: time.Minute},
			{limit: PerMinute(5), op: "peek", allowed: false, remain: 0, retry: time.Minute, reset: time.Minute},
			{limit: PerHour(100), op: "peek", allowed: true, remain: 80, reset: time.Hour},
		}},
		{TokenBucket, []astep{
			{cost: 8, allowed: true, remain: 2, reset: 48 * time.Second},
			// 10 a minute, burst 10 → 20 a minute, burst 20: the 2 tokens
			// left stay, and the other 18 refill at 3 s each
			{limit: PerMinute(20), op: "peek", allowed: true, remain: 2, reset: 54 * time.Second},
			{limit: PerMinute(20), advance: 3 * time.Second, cost: 3, allowed: true, remain: 0, reset: time.Minute},
		}},
	}
	for _, tc := range cases {
		for _, b := range backends(t) {
			t.Run(tc.alg.String()+"/"+b.name, func(t *testing.T) { runAlgTable(t, b, tc.alg, PerMinute(10), tc.steps) })
		}
	}
	b := miniBackend(t)
	l := mustNew(t, b.client, PerMinute(10), WithAlgorithm(FixedWindow))
	if _, err := l.WithLimit(PerMinute(10).WithBurst(20)); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("WithLimit with a burst on a window: %v", err)
	}
	view, err := l.WithLimit(PerSecond(3))
	if err != nil || view.Limit() != PerSecond(3) || l.Limit() != PerMinute(10) || view.Algorithm() != FixedWindow {
		t.Fatalf("view %v / %v: %v", view.Limit(), l.Limit(), err)
	}
}

// TestEventsPerAlgorithm: every algorithm publishes the same Event shape,
// naming itself.
func TestEventsPerAlgorithm(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	for _, alg := range limiterAlgorithms {
		rec := &recorder{}
		l := mustNew(t, b.client, PerMinute(1), append(b.opts, WithAlgorithm(alg), WithNamespace("ev"), WithSubscribers(rec))...)
		first, _ := l.Allow(ctx, "u")
		_, _ = l.Allow(ctx, "u")
		_, _ = l.Peek(ctx, "u")
		_, _ = l.Refund(ctx, "u", first, 1)
		events := rec.all()
		if len(events) != 2 {
			t.Fatalf("%v: %d events, want 2 (Peek and Refund are not decisions)", alg, len(events))
		}
		key, _ := l.Key("u")
		if !strings.HasPrefix(key, "ev:"+alg.String()+":{") {
			t.Errorf("%v: key %q", alg, key)
		}
		for i, e := range events {
			if e.Algorithm != alg || e.Namespace != "ev" || e.Key != key || e.Cost != 1 || e.Result.Allowed != (i == 0) || e.Start.IsZero() {
				t.Errorf("%v: event %d %+v", alg, i, e)
			}
		}
	}
}

// TestWindowTTL: each window algorithm's keys carry a TTL and vanish when
// the identity has nothing left to remember (miniredis moves TTLs with the
// clock).
func TestWindowTTL(t *testing.T) {
	cases := []struct {
		alg  Algorithm
		live time.Duration // the keys must outlive this...
		gone time.Duration // ...and be gone after this much more
	}{
		{FixedWindow, 55 * time.Second, time.Millisecond},    // to the window's end
		{SlidingWindow, 115 * time.Second, time.Millisecond}, // the next window still weighs it
		{SlidingLog, time.Minute, time.Millisecond},          // the entry's expiry
	}
	for _, tc := range cases {
		t.Run(tc.alg.String(), func(t *testing.T) {
			b := miniBackend(t)
			l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithAlgorithm(tc.alg))...)
			if _, err := l.AllowN(context.Background(), "ttl", 3); err != nil {
				t.Fatal(err)
			}
			keys := l.scriptKeys(mustKey(t, l, "ttl"))
			b.advance(tc.live - time.Millisecond)
			for _, k := range keys {
				if !b.exists(k) {
					t.Fatalf("%s gone too early", k)
				}
			}
			b.advance(time.Millisecond + tc.gone)
			for _, k := range keys {
				if b.exists(k) {
					t.Fatalf("%s survived its TTL", k)
				}
			}
		})
	}
	// Real expiry on a real server, on Redis TIME: short windows.
	srv := redistestStart(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	for _, alg := range windowAlgorithms {
		l := mustNew(t, rdb, Limit{Rate: 10, Per: 20 * time.Millisecond}, WithAlgorithm(alg))
		if _, err := l.AllowN(ctx, "ttl", 3); err != nil {
			t.Fatal(err)
		}
		keys := l.scriptKeys(mustKey(t, l, "ttl"))
		for _, k := range keys {
			// -1 is a key without a TTL; -2 (already expired, on a slow
			// machine) is fine.
			if pttl := rdb.PTTL(ctx, k).Val(); pttl == -1 || pttl > 40*time.Millisecond {
				t.Fatalf("%v: PTTL %v of %s, want a TTL of at most 40ms", alg, pttl, k)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for rdb.Exists(ctx, keys...).Val() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%v: keys still there 5s after a 40ms TTL", alg)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func mustKey(t *testing.T, l *Limiter, id string) string {
	t.Helper()
	k, err := l.Key(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewBadInput(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	c := mustNewConcurrency(t, b.client, 4, append(b.opts, WithSubscribers(rec))...)
	l := mustNew(t, b.client, PerSecond(10), append(b.opts, WithAlgorithm(SlidingLog), WithSubscribers(rec))...)
	cases := []badCase{
		{"window burst", func() error {
			_, err := New(b.client, PerSecond(10).WithBurst(20), WithAlgorithm(FixedWindow))
			return err
		}, ErrInvalidLimit},
		{"sliding window burst", func() error {
			_, err := New(b.client, PerSecond(10).WithBurst(5), WithAlgorithm(SlidingWindow))
			return err
		}, ErrInvalidLimit},
		{"window too long", func() error {
			_, err := New(b.client, Limit{Rate: 1, Per: 100 * 365 * 24 * time.Hour}, WithAlgorithm(SlidingLog))
			return err
		}, ErrInvalidLimit},
		{"window rate too large", func() error {
			_, err := New(b.client, PerSecond(1<<60), WithAlgorithm(FixedWindow))
			return err
		}, ErrInvalidLimit},
		{"concurrency algorithm", func() error { _, err := New(b.client, PerSecond(1), WithAlgorithm(Concurrency)); return err }, ErrInvalidOption},
		{"lease TTL on New", func() error { _, err := New(b.client, PerSecond(1), WithLeaseTTL(time.Second)); return err }, ErrInvalidOption},
		{"shadow fail closed", func() error {
			_, err := New(b.client, PerSecond(1), WithShadow(), WithFailStrategy(FailClosed))
			return err
		}, ErrInvalidOption},
		{"validate concurrency", func() error { return Concurrency.Validate(PerSecond(1)) }, ErrInvalidOption},
		{"validate unknown", func() error { return Algorithm(99).Validate(PerSecond(1)) }, ErrInvalidOption},
		{"refund negative", func() error { _, err := l.Refund(ctx, "u", Result{}, -1); return err }, ErrInvalidCost},
		{"refund above quota", func() error { _, err := l.Refund(ctx, "u", Result{}, 11); return err }, ErrInvalidCost},
		{"refund empty identity", func() error { _, err := l.Refund(ctx, "", Result{}, 1); return err }, ErrInvalidIdentity},
		{"cost above quota", func() error { _, err := l.AllowN(ctx, "u", 11); return err }, ErrInvalidCost},
		{"concurrency nil client", func() error { _, err := NewConcurrency(nil, 1); return err }, ErrNilClient},
		{"concurrency zero max", func() error { _, err := NewConcurrency(b.client, 0); return err }, ErrInvalidLimit},
		{"concurrency huge max", func() error { _, err := NewConcurrency(b.client, 1<<60); return err }, ErrInvalidLimit},
		{"concurrency WithAlgorithm", func() error {
			_, err := NewConcurrency(b.client, 1, WithAlgorithm(TokenBucket))
			return err
		}, ErrInvalidOption},
		{"lease TTL too short", func() error { _, err := NewConcurrency(b.client, 1, WithLeaseTTL(time.Microsecond)); return err }, ErrInvalidOption},
		{"lease TTL sub-µs", func() error {
			_, err := NewConcurrency(b.client, 1, WithLeaseTTL(time.Second+time.Nanosecond))
			return err
		}, ErrInvalidOption},
		{"weight zero", func() error { _, _, err := c.Acquire(ctx, "u", 0); return err }, ErrInvalidCost},
		{"weight above max", func() error { _, _, err := c.Acquire(ctx, "u", 5); return err }, ErrInvalidCost},
		{"acquire empty identity", func() error { _, _, err := c.Acquire(ctx, "", 1); return err }, ErrInvalidIdentity},
		{"peek empty identity", func() error { _, err := c.Peek(ctx, ""); return err }, ErrInvalidIdentity},
	}
	checkBadInput(t, b.client, rec, cases)
}

// TestClockBackwards: after a failover to a node whose clock is behind, a
// spent quota must stay spent (no second quota from an earlier window).
func TestClockBackwards(t *testing.T) {
	for _, alg := range limiterAlgorithms {
		for _, b := range backends(t) {
			t.Run(alg.String()+"/"+b.name, func(t *testing.T) {
				ctx := context.Background()
				l := mustNew(t, b.client, PerMinute(5), append(b.opts, WithAlgorithm(alg))...)
				if res, err := l.AllowN(ctx, "u", 5); err != nil || !res.Allowed {
					t.Fatalf("spend: %+v %v", res, err)
				}
				b.advance(-90 * time.Second)
				res, err := l.Allow(ctx, "u")
				if err != nil || res.Allowed || res.RetryAfter <= 0 {
					t.Fatalf("90 s back in time: %+v %v, want a denial", res, err)
				}
			})
		}
	}
}

// TestNoRawIdentityAnyAlgorithm scans every key and value each algorithm,
// the leases and the multi-limit call leave in Redis for a guessable
// identity.
func TestNoRawIdentityAnyAlgorithm(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	const id = "alice@example.com"
	for _, alg := range limiterAlgorithms {
		l := mustNew(t, c, PerMinute(10), WithAlgorithm(alg))
		if res, err := l.AllowN(ctx, id, 3); err != nil || !res.Allowed {
			t.Fatalf("%v: %+v %v", alg, res, err)
		}
	}
	conc := mustNewConcurrency(t, c, 5)
	if _, res, err := conc.Acquire(ctx, id, 2); err != nil || !res.Allowed {
		t.Fatalf("acquire: %+v %v", res, err)
	}
	m := mustNewMulti(t, c, []Quota{{Name: "a", Limit: PerSecond(5)}, {Name: "b", Limit: PerDay(50), Algorithm: FixedWindow}})
	if res, err := m.Allow(ctx, id); err != nil || !res.Allowed {
		t.Fatalf("multi: %+v %v", res, err)
	}
	state := snapshot(t, c)
	if len(state) != 5+2+2 { // 4 algorithms (the log has 2 keys), leases (2), multi (2)
		t.Fatalf("%d keys, want 9: %v", len(state), state)
	}
	for k, v := range state {
		if strings.Contains(k, id) || strings.Contains(v, id) || strings.Contains(k, "alice") || strings.Contains(v, "alice") {
			t.Errorf("raw identity in Redis: %s = %s", k, v)
		}
	}
}

// aclSortedSets are the commands the sliding log and the leases add to
// aclCommands (security_test.go). README documents the same list.
const aclSortedSets = "+hget +zadd +zrem +zcard +zscore +zrange +zrangebyscore +zremrangebyscore"

// TestACLEveryAlgorithm runs every algorithm, the leases and the multi-limit
// call as a Redis ACL user with only the documented commands: the O(1)
// algorithms with the token bucket's list, the sorted-set ones with
// aclSortedSets added.
func TestACLEveryAlgorithm(t *testing.T) {
	srv := redistestStart(t)
	ctx := context.Background()
	basic := aclClient(t, srv, "basic", aclCommands)
	sorted := aclClient(t, srv, "sorted", aclCommands+" "+aclSortedSets)
	exercise := func(t *testing.T, l *Limiter) {
		t.Helper()
		var first Result
		for i, want := range []bool{true, true, false} {
			res, err := l.Allow(ctx, "u")
			if err != nil || res.Allowed != want {
				t.Fatalf("call %d: %+v %v", i, res, err)
			}
			if i == 0 {
				first = res
			}
		}
		if _, err := l.Refund(ctx, "u", first, 1); err != nil {
			t.Fatalf("Refund: %v", err)
		}
		if _, err := l.Peek(ctx, "u"); err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if err := l.Reset(ctx, "u"); err != nil {
			t.Fatalf("Reset: %v", err)
		}
	}
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow} {
		t.Run(alg.String(), func(t *testing.T) {
			exercise(t, mustNew(t, basic, PerMinute(2), WithAlgorithm(alg), WithNamespace("acl"), WithFailStrategy(FailClosed)))
		})
	}
	t.Run("multi", func(t *testing.T) {
		m := mustNewMulti(t, basic, []Quota{{Name: "a", Limit: PerMinute(2)}, {Name: "b", Limit: PerHour(9), Algorithm: SlidingWindow}},
			WithNamespace("acl"), WithFailStrategy(FailClosed))
		var first MultiResult
		for i, want := range []bool{true, true, false} {
			res, err := m.Allow(ctx, "u")
			if err != nil || res.Allowed != want {
				t.Fatalf("call %d: %+v %v", i, res, err)
			}
			if i == 0 {
				first = res
			}
		}
		if _, err := m.Refund(ctx, "u", first, 1, 1); err != nil {
			t.Fatalf("Refund: %v", err)
		}
	})
	t.Run("sliding_log", func(t *testing.T) {
		exercise(t, mustNew(t, sorted, PerMinute(2), WithAlgorithm(SlidingLog), WithNamespace("acl"), WithFailStrategy(FailClosed)))
		// The token bucket's list alone is not enough, and that shows.
		l := mustNew(t, basic, PerMinute(2), WithAlgorithm(SlidingLog), WithNamespace("acl"), WithFailStrategy(FailClosed))
		var be *BackendError
		// (A command refused inside a script is an ERR reply, not NOPERM.)
		if _, err := l.Allow(ctx, "v"); !errors.As(err, &be) || be.Type != ErrorScript || !strings.Contains(err.Error(), "can't run this command") {
			t.Fatalf("sliding log without the sorted-set commands: %v", err)
		}
	})
	t.Run("concurrency", func(t *testing.T) {
		c := mustNewConcurrency(t, sorted, 1, WithNamespace("acl"), WithFailStrategy(FailClosed))
		lease, res, err := c.Acquire(ctx, "u", 1)
		if err != nil || !res.Allowed {
			t.Fatalf("Acquire: %+v %v", res, err)
		}
		if err := lease.Extend(ctx); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if _, err := c.Peek(ctx, "u"); err != nil {
			t.Fatalf("Peek: %v", err)
		}
	})
}

// TestFailStrategiesNewLimiters: with Redis down, the leases and the
// multi-limit call follow the fail strategy, return the *BackendError and
// publish it, like the Limiter.
func TestFailStrategiesNewLimiters(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	opts := []Option{WithBus(bus), WithTimeout(200 * time.Millisecond)}
	openC := mustNewConcurrency(t, c, 1, opts...)
	closedC := mustNewConcurrency(t, c, 1, append(opts, WithFailStrategy(FailClosed))...)
	quotas := []Quota{{Name: "a", Limit: PerSecond(1)}, {Name: "b", Limit: PerDay(9), Algorithm: FixedWindow}}
	openM := mustNewMulti(t, c, quotas, opts...)
	closedM := mustNewMulti(t, c, quotas, append(opts, WithFailStrategy(FailClosed))...)
	srv.Stop()

	lease, res, err := openC.Acquire(ctx, "u", 1)
	if !errors.Is(err, ErrBackend) || !(res.Reason == ReasonFailOpen) || lease == nil || lease.Tracked() {
		t.Fatalf("fail-open acquire: %v %+v %v", lease, res, err)
	}
	if err := lease.Release(ctx); err != nil { // untracked: nothing to do, no Redis call
		t.Fatalf("release of an untracked lease: %v", err)
	}
	lease, res, err = closedC.Acquire(ctx, "u", 1)
	if !errors.Is(err, ErrBackend) || res.Allowed || res.Reason != ReasonFailClosed || lease != nil {
		t.Fatalf("fail-closed acquire: %v %+v %v", lease, res, err)
	}
	mres, err := openM.Allow(ctx, "u")
	if !errors.Is(err, ErrBackend) || mres.Reason != ReasonFailOpen || len(mres.Quotas) != 2 || mres.Quotas[1].Reason != ReasonFailOpen || mres.Quotas[1].Limit != PerDay(9) {
		t.Fatalf("fail-open multi: %+v %v", mres, err)
	}
	mres, err = closedM.Allow(ctx, "u")
	if !errors.Is(err, ErrBackend) || mres.Allowed || mres.Reason != ReasonFailClosed {
		t.Fatalf("fail-closed multi: %+v %v", mres, err)
	}
	if _, err := openM.Refund(ctx, "u", mres, 1, 1); err != nil {
		t.Fatalf("refund of a fail-closed denial: %v, want nothing to do", err)
	}
	if _, err := openM.Refund(ctx, "u", MultiResult{Result: spentNow()}, 1, 1); !errors.Is(err, ErrBackend) {
		t.Fatalf("refund with Redis down: %v", err)
	}
	events := rec.all()
	if len(events) != 4 {
		t.Fatalf("%d events, want 4 (refunds are not decisions)", len(events))
	}
	for _, e := range events {
		if !errors.Is(e.Err, ErrBackend) || e.Result.Reason == ReasonQuota {
			t.Errorf("event %+v lacks the error or the fail reason", e)
		}
	}
}
