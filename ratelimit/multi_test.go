package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func mustNewMulti(t testing.TB, c redis.UniversalClient, quotas []Quota, opts ...Option) *MultiLimiter {
	t.Helper()
	m, err := NewMulti(c, quotas, opts...)
	if err != nil {
		t.Fatalf("NewMulti: %v", err)
	}
	return m
}

// TestMultiTable: a per-second sliding window and a per-day fixed window on
// one identity, all or nothing.
func TestMultiTable(t *testing.T) {
	quotas := []Quota{
		{Name: "burst", Limit: PerSecond(2), Algorithm: SlidingWindow},
		{Name: "daily", Limit: PerDay(5), Algorithm: FixedWindow},
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			rec := &recorder{}
			m := mustNewMulti(t, b.client, quotas, append(b.opts, WithSubscribers(rec))...)
			const id = "key:42"
			type want struct {
				allowed bool
				quota   string
				remain  int64
				retry   time.Duration
				per     [2]bool  // each quota alone
				left    [2]int64 // each quota's remaining
			}
			check := func(what string, res MultiResult, err error, w want) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if res.Allowed != w.allowed || res.Quota != w.quota || res.Remaining != w.remain || res.RetryAfter != w.retry {
					t.Errorf("%s: got allowed=%v quota=%q remaining=%d retry=%v, want %v %q %d %v",
						what, res.Allowed, res.Quota, res.Remaining, res.RetryAfter, w.allowed, w.quota, w.remain, w.retry)
				}
				if len(res.Quotas) != 2 {
					t.Fatalf("%s: %d quota results", what, len(res.Quotas))
				}
				for i, q := range res.Quotas {
					if q.Allowed != w.per[i] || q.Remaining != w.left[i] || q.Quota != quotas[i].Name || q.Limit != quotas[i].Limit {
						t.Errorf("%s: quota %d: %+v, want allowed=%v remaining=%d", what, i, q, w.per[i], w.left[i])
					}
				}
			}
			// base is 03:04:05.000000 UTC: 20h55m55s before the day's end.
			toMidnight := 24*time.Hour - (3*time.Hour + 4*time.Minute + 5*time.Second)

			res, err := m.Allow(ctx, id)
			check("first", res, err, want{true, "burst", 1, 0, [2]bool{true, true}, [2]int64{1, 4}})
			res, err = m.Allow(ctx, id)
			check("second", res, err, want{true, "burst", 0, 0, [2]bool{true, true}, [2]int64{0, 3}})
			// The per-second quota denies: the daily one is not spent.
			res, err = m.Allow(ctx, id)
			check("burst denies", res, err, want{false, "burst", 0, 1500 * time.Millisecond, [2]bool{false, true}, [2]int64{0, 3}})
			b.advance(1500 * time.Millisecond)
			res, err = m.Allow(ctx, id)
			check("burst faded", res, err, want{true, "burst", 0, 0, [2]bool{true, true}, [2]int64{0, 2}})
			b.advance(10 * time.Second)
			// A cost equal to the per-second limit; both end at zero: the
			// first quota binds on a tie.
			res, err = m.AllowN(ctx, id, 2)
			check("cost 2", res, err, want{true, "burst", 0, 0, [2]bool{true, true}, [2]int64{0, 0}})
			spent := res
			b.advance(10 * time.Second)
			// The daily quota denies until midnight; the per-second one
			// would allow, and is not spent.
			res, err = m.Allow(ctx, id)
			check("daily denies", res, err, want{false, "daily", 0, toMidnight - 21500*time.Millisecond, [2]bool{true, false}, [2]int64{2, 0}})
			// Settle: give 2 back to the daily quota only.
			res, err = m.Refund(ctx, id, spent, 0, 2)
			check("refund", res, err, want{true, "daily", 2, 0, [2]bool{true, true}, [2]int64{2, 2}})
			res, err = m.AllowCosts(ctx, id, 1, 2)
			check("costs 1 and 2", res, err, want{true, "daily", 0, 0, [2]bool{true, true}, [2]int64{1, 0}})
			res, err = m.Peek(ctx, id)
			check("peek", res, err, want{false, "daily", 0, toMidnight - 21500*time.Millisecond, [2]bool{true, false}, [2]int64{1, 0}})
			if err := m.Reset(ctx, id); err != nil {
				t.Fatal(err)
			}
			res, err = m.Peek(ctx, id)
			check("after reset", res, err, want{true, "burst", 2, 0, [2]bool{true, true}, [2]int64{2, 5}})

			// One event per decision (Allow, AllowN, AllowCosts), none for
			// Peek and Refund; each names the deciding quota.
			events := rec.all()
			if len(events) != 7 {
				t.Fatalf("%d events, want 7", len(events))
			}
			keys, _ := m.Keys(id)
			if e := events[2]; e.Result.Allowed || e.Result.Quota != "burst" || e.Algorithm != SlidingWindow || e.Key != keys[0] {
				t.Errorf("burst denial event %+v", e)
			}
			if e := events[5]; e.Result.Allowed || e.Result.Quota != "daily" || e.Algorithm != FixedWindow || e.Key != keys[1] {
				t.Errorf("daily denial event %+v", e)
			}
		})
	}
}

// TestMultiMatchesSingle runs each algorithm's behaviour table through a
// MultiLimiter of one quota: multi.lua must count exactly as the
// single-algorithm scripts do.
func TestMultiMatchesSingle(t *testing.T) {
	tables := []struct {
		alg   Algorithm
		limit Limit
		steps []astep
	}{
		{FixedWindow, PerMinute(10), fixedWindowSteps},
		{SlidingWindow, PerMinute(10), slidingWindowSteps},
		{SlidingWindow, PerDay(1_000_000), slidingWindowDaySteps},
		{TokenBucket, PerMinute(60).WithBurst(10), tokenBucketRefundSteps},
	}
	for _, tc := range tables {
		for _, b := range backends(t) {
			t.Run(tc.alg.String()+"/"+b.name, func(t *testing.T) {
				ctx := context.Background()
				m := mustNewMulti(t, b.client, []Quota{{Name: "q", Limit: tc.limit, Algorithm: tc.alg}}, b.opts...)
				var spent MultiResult // the last allowed "allow", which a "refund" gives back to
				for i, s := range tc.steps {
					b.advance(s.advance)
					var (
						res MultiResult
						err error
					)
					switch s.op {
					case "", "allow":
						res, err = m.AllowN(ctx, "id", s.cost)
						if res.Allowed {
							spent = res
						}
					case "peek":
						res, err = m.Peek(ctx, "id")
					case "refund":
						res, err = m.Refund(ctx, "id", spent, s.cost)
					case "reset":
						if err := m.Reset(ctx, "id"); err != nil {
							t.Fatal(err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					if res.Allowed != s.allowed || res.Remaining != s.remain || res.RetryAfter != s.retry || res.ResetAfter != s.reset {
						t.Errorf("step %d (%s cost %d after %v): got allowed=%v remaining=%d retry=%v reset=%v, want %v %d %v %v",
							i, s.op, s.cost, s.advance, res.Allowed, res.Remaining, res.RetryAfter, res.ResetAfter,
							s.allowed, s.remain, s.retry, s.reset)
					}
				}
			})
		}
	}
}

func TestMultiBadInput(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	good := []Quota{{Name: "rps", Limit: PerSecond(10)}, {Name: "tokens", Limit: PerMinute(1000), Algorithm: FixedWindow}}
	rec := &recorder{}
	m := mustNewMulti(t, b.client, good, append(b.opts, WithSubscribers(rec))...)
	many := make([]Quota, MaxQuotas+1)
	for i := range many {
		many[i] = Quota{Name: "q" + strings.Repeat("x", i), Limit: PerSecond(1)}
	}
	cases := []badCase{
		{"nil client", func() error { _, err := NewMulti(nil, good); return err }, ErrNilClient},
		{"no quotas", func() error { _, err := NewMulti(b.client, nil); return err }, ErrInvalidLimit},
		{"too many quotas", func() error { _, err := NewMulti(b.client, many); return err }, ErrInvalidLimit},
		{"empty name", func() error { _, err := NewMulti(b.client, []Quota{{Limit: PerSecond(1)}}); return err }, ErrInvalidLimit},
		{"bad name", func() error { _, err := NewMulti(b.client, []Quota{{Name: "a}b", Limit: PerSecond(1)}}); return err }, ErrInvalidLimit},
		{"duplicate name", func() error {
			_, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(1)}, {Name: "a", Limit: PerDay(9)}})
			return err
		}, ErrInvalidLimit},
		{"sliding log quota", func() error {
			_, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(1), Algorithm: SlidingLog}})
			return err
		}, ErrInvalidLimit},
		{"bad limit", func() error { _, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(0)}}); return err }, ErrInvalidLimit},
		{"window burst", func() error {
			_, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(5).WithBurst(9), Algorithm: FixedWindow}})
			return err
		}, ErrInvalidLimit},
		{"WithAlgorithm", func() error { _, err := NewMulti(b.client, good, WithAlgorithm(FixedWindow)); return err }, ErrInvalidOption},
		{"WithLeaseTTL", func() error { _, err := NewMulti(b.client, good, WithLeaseTTL(time.Second)); return err }, ErrInvalidOption},
		{"too few costs", func() error { _, err := m.AllowCosts(ctx, "u", 1); return err }, ErrInvalidCost},
		{"too many costs", func() error { _, err := m.AllowCosts(ctx, "u", 1, 1, 1); return err }, ErrInvalidCost},
		{"negative cost", func() error { _, err := m.AllowCosts(ctx, "u", 1, -1); return err }, ErrInvalidCost},
		{"cost above a quota", func() error { _, err := m.AllowN(ctx, "u", 11); return err }, ErrInvalidCost},
		{"refund above a quota", func() error { _, err := m.Refund(ctx, "u", MultiResult{Result: spentNow()}, 0, 1001); return err }, ErrInvalidCost},
		{"empty identity", func() error { _, err := m.Allow(ctx, ""); return err }, ErrInvalidIdentity},
		{"reset empty identity", func() error { return m.Reset(ctx, "") }, ErrInvalidIdentity},
	}
	checkBadInput(t, b.client, rec, cases)
}

func TestMultiWithLimits(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			free := mustNewMulti(t, b.client, []Quota{
				{Name: "rpm", Limit: PerMinute(2), Algorithm: FixedWindow},
				{Name: "daily", Limit: PerDay(10), Algorithm: FixedWindow},
			}, b.opts...)
			pro, err := free.WithLimits(PerMinute(100), PerDay(1000))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = free.Allow(ctx, "u")
			_, _ = free.Allow(ctx, "u")
			if res, _ := free.Allow(ctx, "u"); res.Allowed || res.Quota != "rpm" {
				t.Fatalf("free plan: %+v", res)
			}
			// The upgrade sees the same state, against the new limits.
			res, err := pro.Allow(ctx, "u")
			if err != nil || !res.Allowed || res.Quotas[0].Remaining != 97 || res.Quotas[1].Remaining != 997 || res.Quotas[1].Limit != PerDay(1000) {
				t.Fatalf("pro plan: %+v %v", res, err)
			}
			if free.Quotas()[0].Limit != PerMinute(2) {
				t.Fatal("WithLimits changed the original")
			}
			if _, err := free.WithLimits(PerMinute(1)); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("one limit for two quotas: %v", err)
			}
			if _, err := free.WithLimits(PerMinute(1).WithBurst(5), PerDay(1)); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("a burst on a window quota: %v", err)
			}
		})
	}
}

// TestMultiZeroCostNotDeciding: a quota a call gives cost 0 is left out of
// the decision, so it is never the quota the Result names, however little
// it has left.
func TestMultiZeroCostNotDeciding(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			m := mustNewMulti(t, b.client, []Quota{{Name: "req", Limit: PerMinute(10)}, {Name: "tok", Limit: PerMinute(1000)}}, b.opts...)
			if res, err := m.AllowCosts(ctx, "u", 0, 990); err != nil || !res.Allowed || res.Quota != "tok" {
				t.Fatalf("tokens only: %+v %v", res, err)
			}
			res, err := m.AllowCosts(ctx, "u", 1, 0)
			if err != nil || !res.Allowed || res.Quota != "req" || res.Remaining != 9 {
				t.Fatalf("a request without tokens: %+v %v, want quota req with 9 left", res, err)
			}
		})
	}
}
