package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The adversarial cases of the shared limit, each on a real redis-server:
// a caller that ends its own call, a refund whose reply is lost, a plan
// change to a longer limit, a refund of an older spend, and cost 0 after a
// downgrade. Each failed on the code before the fixes (see the README's
// reliability table).

// pipelining runs f with pipelining on and off, each in a namespace of its
// own.
func pipelining(t *testing.T, f func(t *testing.T, opts []Option)) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", on), func(t *testing.T) {
			f(t, []Option{WithPipelining(on), WithNamespace(fmt.Sprintf("pipelining-%v", on))})
		})
	}
}

// TestCallerEndedIsNotAdmitted: once the limit is used up, a call whose
// context is already canceled, or past its deadline, is denied with
// ReasonCanceled under FailOpen: the caller giving up is not a Redis
// outage, and must not be let through by the fail strategy. Every limiter
// and method that decides.
func TestCallerEndedIsNotAdmitted(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Millisecond))
	defer cancel2()

	pipelining(t, func(t *testing.T, opts []Option) {
		opts = append(opts, WithFailStrategy(FailOpen), WithTimeout(5*time.Second))
		for _, alg := range limiterAlgorithms {
			l := mustNew(t, c, PerHour(2), append(opts, WithAlgorithm(alg))...)
			if res, err := l.AllowN(ctx, "u", 2); err != nil || !res.Allowed {
				t.Fatalf("%v: use up the limit: %+v %v", alg, res, err)
			}
			for name, cctx := range map[string]context.Context{"canceled": canceled, "expired": expired} {
				res, err := l.Allow(cctx, "u")
				if err == nil || res.Allowed || res.Reason != ReasonCanceled {
					t.Errorf("%v/%s: Allow: %+v %v, want a denial with ReasonCanceled", alg, name, res, err)
				}
				batch, err := l.BatchAllow(cctx, []Request{{"u", 1}, {"fresh", 1}})
				if err == nil || len(batch) != 2 || batch[0].Allowed || batch[1].Allowed || batch[1].Reason != ReasonCanceled {
					t.Errorf("%v/%s: BatchAllow: %+v %v, want denials with ReasonCanceled", alg, name, batch, err)
				}
				if res, err := l.Wait(cctx, "u", 1); err == nil || res.Allowed {
					t.Errorf("%v/%s: Wait: %+v %v, want a denial", alg, name, res, err)
				}
			}
		}
		m := mustNewMulti(t, c, []Quota{{Name: "a", Limit: PerHour(1)}, {Name: "b", Limit: PerHour(5), Algorithm: FixedWindow}}, opts...)
		if res, err := m.Allow(ctx, "u"); err != nil || !res.Allowed {
			t.Fatalf("multi: %+v %v", res, err)
		}
		if res, err := m.Allow(canceled, "u"); err == nil || res.Allowed || res.Reason != ReasonCanceled {
			t.Errorf("multi: %+v %v, want a denial with ReasonCanceled", res, err)
		}
		conc := mustNewConcurrency(t, c, 1, opts...)
		held, _, err := conc.Acquire(ctx, "u", 1)
		if err != nil || held == nil {
			t.Fatalf("acquire: %v", err)
		}
		defer held.Release(ctx)
		if lease, res, err := conc.Acquire(canceled, "u", 1); err == nil || lease != nil || res.Allowed || res.Reason != ReasonCanceled {
			t.Errorf("acquire: %v %+v %v, want no lease and ReasonCanceled", lease, res, err)
		}
	})
}

// TestRefundReplyLost: a refund whose reply is lost is sent again by
// go-redis (MaxRetries 3 by default) on a new connection, and Redis runs
// it twice; it must give back once. Every algorithm, pipelined or not, and
// the MultiLimiter.
func TestRefundReplyLost(t *testing.T) {
	srv := redistestStart(t)
	ctx := context.Background()
	p := newReplyDropper(t, srv.Addr)
	c := redis.NewClient(&redis.Options{Addr: p.addr(), ContextTimeoutEnabled: true, Protocol: 2}) // default MaxRetries: 3
	t.Cleanup(func() { _ = c.Close() })
	dropNext := func(t *testing.T) func() {
		t.Helper()
		p.dropped.Store(0)
		p.armed.Store(1)
		return func() {
			t.Helper()
			if p.dropped.Load() != 1 {
				t.Fatal("no reply was dropped")
			}
		}
	}
	pipelining(t, func(t *testing.T, opts []Option) {
		opts = append(opts, WithTimeout(5*time.Second), WithFailStrategy(FailClosed))
		for _, alg := range limiterAlgorithms {
			l := mustNew(t, c, PerHour(10), append(opts, WithAlgorithm(alg))...)
			spent, err := l.AllowN(ctx, "u", 10)
			if err != nil || !spent.Allowed {
				t.Fatalf("%v: %+v %v", alg, spent, err)
			}
			check := dropNext(t)
			res, err := l.Refund(ctx, "u", spent, 3)
			check()
			if err != nil || res.Remaining != 3 {
				t.Errorf("%v: refund of 3 after a lost reply: %+v %v, want 3 remaining", alg, res, err)
			}
			admitted := 0
			for range 10 {
				if res, err := l.Allow(ctx, "u"); err == nil && res.Allowed {
					admitted++
				}
			}
			if admitted != 3 {
				t.Errorf("%v: %d admitted after refunding 3, want 3", alg, admitted)
			}
		}
		m := mustNewMulti(t, c, []Quota{{Name: "calls", Limit: PerHour(10)}, {Name: "tokens", Limit: PerHour(100), Algorithm: SlidingWindow}}, opts...)
		spent, err := m.AllowCosts(ctx, "u", 10, 100)
		if err != nil || !spent.Allowed {
			t.Fatalf("multi: %+v %v", spent, err)
		}
		check := dropNext(t)
		res, err := m.Refund(ctx, "u", spent, 3, 30)
		check()
		if err != nil || res.Quotas[0].Remaining != 3 || res.Quotas[1].Remaining != 30 {
			t.Errorf("multi refund after a lost reply: %+v %v, want 3 and 30 back", res, err)
		}
	})
}

// TestPlanChangeKeepsState: a plan change to a longer limit after the
// limit was used up; the denials that follow write nothing, and the key's
// TTL must still cover what the new limit needs, or the old, short TTL
// wipes the state and the next calls are admitted in full. The key's PTTL
// shows it without waiting for it to run out. Every algorithm, the
// MultiLimiter, and the way back down.
func TestPlanChangeKeepsState(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	short := Limit{Rate: 10, Per: 200 * time.Millisecond}
	pttl := func(t *testing.T, key string) time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, alg := range limiterAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			l := mustNew(t, c, short, WithAlgorithm(alg), WithNamespace("plan"), WithTimeout(5*time.Second))
			if res, err := l.AllowN(ctx, "u", 10); err != nil || !res.Allowed {
				t.Fatalf("spend: %+v %v", res, err)
			}
			hour, err := l.WithLimit(PerHour(10))
			if err != nil {
				t.Fatal(err)
			}
			res, err := hour.Allow(ctx, "u")
			if err != nil || res.Allowed || res.ResetAfter <= short.Per {
				t.Fatalf("under the hourly plan: %+v %v, want a denial, the state needed for longer than the old period", res, err)
			}
			key := mustKey(t, l, "u")
			for _, k := range l.scriptKeys(key) {
				if d := pttl(t, k); d+50*time.Millisecond < res.ResetAfter {
					t.Errorf("%s: PTTL %v after the denial, want the state kept as long as the hourly plan needs it (%v)", k, d, res.ResetAfter)
				}
			}
			// A cost of 0 under the longer plan does the same.
			if res, err := hour.AllowN(ctx, "u", 0); err != nil || !res.Allowed {
				t.Errorf("cost 0: %+v %v", res, err)
			}
			// And back down: the short plan applies at once, its state
			// refills within its own period.
			if res, err := l.Peek(ctx, "u"); err != nil || res.RetryAfter > 2*short.Per {
				t.Errorf("back on the short plan: %+v %v", res, err)
			}
		})
	}
	t.Run("multi", func(t *testing.T) {
		quotas := []Quota{{Name: "tb", Limit: short}, {Name: "sw", Limit: short, Algorithm: SlidingWindow}, {Name: "fw", Limit: short, Algorithm: FixedWindow}}
		m := mustNewMulti(t, c, quotas, WithNamespace("plan"), WithTimeout(5*time.Second))
		if res, err := m.AllowN(ctx, "u", 10); err != nil || !res.Allowed {
			t.Fatalf("spend: %+v %v", res, err)
		}
		hour, err := m.WithLimits(PerHour(10), PerHour(10), PerHour(10))
		if err != nil {
			t.Fatal(err)
		}
		res, err := hour.Allow(ctx, "u")
		if err != nil || res.Allowed {
			t.Fatalf("under the hourly plan: %+v %v, want a denial", res, err)
		}
		keys, err := m.Keys("u")
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if d, need := pttl(t, k), res.Quotas[i].ResetAfter; need <= short.Per || d+50*time.Millisecond < need {
				t.Errorf("%s: PTTL %v after the denial, want the state kept as long as the hourly plan needs it (%v)", k, d, need)
			}
		}
	})
}

// TestRefundOfAnOlderSpend: a refund gives back to the spend it refunds,
// not to the newest one: the cases of the adversarial review, on the
// scripts' test clock.
func TestRefundOfAnOlderSpend(t *testing.T) {
	b := realBackend(t)
	ctx := context.Background()
	// nextMinute moves the test clock to the next whole minute, so that
	// the windows line up with the seconds below.
	clock := mustNew(t, b.client, PerMinute(1), append(b.opts, WithNamespace("clock"))...)
	nextMinute := func() {
		res, err := clock.Peek(ctx, "clock")
		if err != nil {
			t.Fatal(err)
		}
		b.advance(res.Time.Truncate(time.Minute).Add(time.Minute).Sub(res.Time))
	}
	nextMinute()

	t.Run("sliding_log", func(t *testing.T) {
		l := mustNew(t, b.client, PerMinute(2000), append(b.opts, WithAlgorithm(SlidingLog), WithNamespace("older"))...)
		a, _ := l.AllowN(ctx, "u", 1000) // A at 0 s
		b.advance(10 * time.Second)
		if res, _ := l.AllowN(ctx, "u", 1000); !res.Allowed { // B at 10 s
			t.Fatalf("B: %+v", res)
		}
		b.advance(10 * time.Second)
		if _, err := l.Refund(ctx, "u", a, 900); err != nil { // A gives back 900 at 20 s
			t.Fatal(err)
		}
		b.advance(40*time.Second + time.Millisecond) // A's spend has left the window
		admitted := int64(0)
		for _, cost := range []int64{1000, 900, 1} {
			if res, _ := l.AllowN(ctx, "u", cost); res.Allowed {
				admitted += cost
			}
		}
		// B's 1000 still count in (10 s, 70 s]: 1000 more at most.
		if admitted != 1000 {
			t.Errorf("%d admitted at 60.001 s, want 1000 (B's 1000 still in the window)", admitted)
		}
	})
	t.Run("sliding_window", func(t *testing.T) {
		nextMinute()
		l := mustNew(t, b.client, PerMinute(20), append(b.opts, WithAlgorithm(SlidingWindow), WithNamespace("older"))...)
		b.advance(59 * time.Second)
		early, _ := l.AllowN(ctx, "u", 10) // at 59 s, in window 0
		b.advance(time.Second)
		if res, _ := l.AllowN(ctx, "u", 10); !res.Allowed { // at 60 s, window 1
			t.Fatalf("spend at 60 s: %+v", res)
		}
		b.advance(time.Second)
		if _, err := l.Refund(ctx, "u", early, 9); err != nil { // of window 0's spend
			t.Fatal(err)
		}
		// Window 1 holds 10 of its 20: however the rest is spread, at
		// most 10 more are admitted in it.
		admitted := int64(10)
		for range 58 {
			if res, _ := l.Allow(ctx, "u"); res.Allowed {
				admitted++
			}
			b.advance(time.Second)
		}
		if admitted > 20 {
			t.Errorf("%d spent inside [60 s, 120 s), want at most 20", admitted)
		}
	})
	t.Run("fixed_window", func(t *testing.T) {
		nextMinute()
		l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithAlgorithm(FixedWindow), WithNamespace("older"))...)
		b.advance(59 * time.Second)
		early, _ := l.AllowN(ctx, "u", 10)
		b.advance(time.Second)
		if res, _ := l.AllowN(ctx, "u", 10); !res.Allowed {
			t.Fatalf("spend at 60 s: %+v", res)
		}
		res, err := l.Refund(ctx, "u", early, 9) // the earlier window's spend is forgotten already
		if err != nil || res.Remaining != 0 {
			t.Errorf("refund of the earlier window's spend: %+v %v, want nothing given back", res, err)
		}
		if res, _ := l.Allow(ctx, "u"); res.Allowed {
			t.Errorf("the window's 10 of 10 are spent: %+v", res)
		}
	})
}

// TestCostZeroAfterDowngrade: a cost of 0 is always allowed, also when a
// downgrade leaves more spent than the new limit, and a quota with cost 0
// never denies a MultiLimiter call.
func TestCostZeroAfterDowngrade(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			for _, alg := range limiterAlgorithms {
				l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithAlgorithm(alg), WithNamespace("zero"))...)
				if res, err := l.AllowN(ctx, "u", 10); err != nil || !res.Allowed {
					t.Fatalf("%v: %+v %v", alg, res, err)
				}
				low, err := l.WithLimit(PerMinute(5))
				if err != nil {
					t.Fatal(err)
				}
				if res, err := low.AllowN(ctx, "u", 0); err != nil || !res.Allowed || res.Remaining != 0 {
					t.Errorf("%v: cost 0 after a downgrade: %+v %v, want allowed with nothing left", alg, res, err)
				}
				if res, err := low.AllowN(ctx, "u", 1); err != nil || res.Allowed {
					t.Errorf("%v: cost 1 after a downgrade: %+v %v, want a denial", alg, res, err)
				}
			}
			quotas := []Quota{{Name: "calls", Limit: PerMinute(10)}, {Name: "tokens", Limit: PerMinute(100), Algorithm: FixedWindow}}
			m := mustNewMulti(t, b.client, quotas, append(b.opts, WithNamespace("zero"))...)
			if res, err := m.AllowCosts(ctx, "u", 1, 100); err != nil || !res.Allowed {
				t.Fatalf("multi: %+v %v", res, err)
			}
			low, err := m.WithLimits(PerMinute(10), PerMinute(50))
			if err != nil {
				t.Fatal(err)
			}
			res, err := low.AllowCosts(ctx, "u", 1, 0)
			if err != nil || !res.Allowed || res.Quota != "calls" {
				t.Errorf("multi with the token quota at cost 0 after a downgrade: %+v %v, want allowed by calls", res, err)
			}
		})
	}
}

// TestRefundAfterReset: a refund of a spend that a Reset forgot gives
// nothing back (the state it names is gone; the new state was born after
// it), for every algorithm and the MultiLimiter: else it would give back
// the units of later spends.
func TestRefundAfterReset(t *testing.T) {
	b := realBackend(t)
	ctx := context.Background()
	for _, alg := range limiterAlgorithms {
		l := mustNew(t, b.client, PerMinute(7), append(b.opts, WithAlgorithm(alg), WithNamespace("reset-refund"))...)
		old, err := l.AllowN(ctx, "u", 1)
		if err != nil || !old.Allowed {
			t.Fatalf("%v: %+v %v", alg, old, err)
		}
		if err := l.Reset(ctx, "u"); err != nil {
			t.Fatal(err)
		}
		b.advance(time.Millisecond)
		if res, err := l.AllowN(ctx, "u", 7); err != nil || !res.Allowed {
			t.Fatalf("%v: the full burst after the reset: %+v %v", alg, res, err)
		}
		res, err := l.Refund(ctx, "u", old, 1)
		if err != nil || res.Remaining != 0 {
			t.Errorf("%v: refund of the spend before the reset: %+v %v, want nothing given back", alg, res, err)
		}
		if res, _ := l.Allow(ctx, "u"); res.Allowed {
			t.Errorf("%v: admitted an 8th unit with a limit of 7", alg)
		}
	}
	m := mustNewMulti(t, b.client, []Quota{{Name: "tb", Limit: PerMinute(7)}, {Name: "fw", Limit: PerMinute(7), Algorithm: FixedWindow}},
		append(b.opts, WithNamespace("reset-refund"))...)
	old, _ := m.Allow(ctx, "u")
	if err := m.Reset(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	b.advance(time.Millisecond)
	if res, _ := m.AllowN(ctx, "u", 7); !res.Allowed {
		t.Fatalf("multi: the full burst after the reset: %+v", res)
	}
	if res, err := m.Refund(ctx, "u", old, 1, 1); err != nil || res.Quotas[0].Remaining != 0 || res.Quotas[1].Remaining != 0 {
		t.Errorf("multi: refund of the spend before the reset: %+v %v, want nothing given back", res, err)
	}
}
