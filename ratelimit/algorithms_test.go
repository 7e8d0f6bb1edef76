package ratelimit

import (
	"context"
	"testing"
	"time"
)

// astep is one call in an algorithm's behaviour table, made after moving
// the clock by advance.
type astep struct {
	advance time.Duration
	op      string // "allow" (default), "peek", "refund" (of the last allowed "allow"), "reset"
	cost    int64  // cost, or amount for "refund"
	limit   Limit  // when set, the call goes through WithLimit(limit)
	allowed bool
	remain  int64
	retry   time.Duration
	reset   time.Duration
}

func runAlgTable(t *testing.T, b backend, alg Algorithm, lim Limit, steps []astep) *Limiter {
	t.Helper()
	ctx := context.Background()
	l := mustNew(t, b.client, lim, append(b.opts, WithNamespace("table"), WithAlgorithm(alg))...)
	const id = "user:table"
	var spent Result // the last allowed "allow", which a "refund" gives back to
	for i, s := range steps {
		b.advance(s.advance)
		call, want := l, lim
		if s.limit != (Limit{}) {
			var err error
			if call, err = l.WithLimit(s.limit); err != nil {
				t.Fatalf("step %d: WithLimit(%v): %v", i, s.limit, err)
			}
			want = s.limit
		}
		var (
			res Result
			err error
		)
		switch s.op {
		case "", "allow":
			res, err = call.AllowN(ctx, id, s.cost)
			if res.Allowed {
				spent = res
			}
		case "peek":
			res, err = call.Peek(ctx, id)
		case "refund":
			res, err = call.Refund(ctx, id, spent, s.cost)
		case "reset":
			if err := call.Reset(ctx, id); err != nil {
				t.Fatalf("step %d: Reset: %v", i, err)
			}
			continue
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		if err != nil {
			t.Fatalf("step %d (%s cost %d): %v", i, s.op, s.cost, err)
		}
		if res.Reason != ReasonQuota || res.Limit != want {
			t.Errorf("step %d: reason %v limit %v, want quota %v", i, res.Reason, res.Limit, want)
		}
		if res.Allowed != s.allowed || res.Remaining != s.remain || res.RetryAfter != s.retry || res.ResetAfter != s.reset {
			t.Errorf("step %d (%s cost %d after %v): got allowed=%v remaining=%d retry=%v reset=%v, want %v %d %v %v",
				i, s.op, s.cost, s.advance, res.Allowed, res.Remaining, res.RetryAfter, res.ResetAfter,
				s.allowed, s.remain, s.retry, s.reset)
		}
	}
	return l
}

// The tables start at base, 2026-01-02 03:04:05 UTC: 5 s into a minute
// window, and 4 min 5 s into an hour window (windows are aligned to the Unix
// epoch).

var fixedWindowSteps = []astep{
	{cost: 4, allowed: true, remain: 6, reset: 55 * time.Second},
	{cost: 6, allowed: true, remain: 0, reset: 55 * time.Second},
	// a denial spends nothing and waits for the next window
	{cost: 1, allowed: false, remain: 0, retry: 55 * time.Second, reset: 55 * time.Second},
	{advance: 55*time.Second - time.Microsecond, cost: 1, allowed: false, remain: 0, retry: time.Microsecond, reset: time.Microsecond},
	// the window edge: a cost equal to the limit fits the new window
	{advance: time.Microsecond, cost: 10, allowed: true, remain: 0, reset: time.Minute},
	{op: "peek", allowed: false, remain: 0, retry: time.Minute, reset: time.Minute},
	{cost: 0, allowed: true, remain: 0, reset: time.Minute},
	{advance: 30 * time.Second, op: "refund", cost: 4, allowed: true, remain: 4, reset: 30 * time.Second},
	// refund past capacity: back to a full quota, never more
	{op: "refund", cost: 10, allowed: true, remain: 10},
	{cost: 10, allowed: true, remain: 0, reset: 30 * time.Second},
	{op: "reset"},
	{cost: 10, allowed: true, remain: 0, reset: 30 * time.Second},
	// a refund in a later window does not reach back into an earlier one
	{advance: 30 * time.Second, op: "refund", cost: 10, allowed: true, remain: 10},
	{cost: 1, allowed: true, remain: 9, reset: time.Minute},
}

func TestFixedWindowTable(t *testing.T) {
	lim := PerMinute(10)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { runAlgTable(t, b, FixedWindow, lim, fixedWindowSteps) })
	}
}

var slidingWindowSteps = []astep{
	{cost: 5, allowed: true, remain: 5, reset: 115 * time.Second},
	{cost: 5, allowed: true, remain: 0, reset: 115 * time.Second},
	// The current window is full: wait for the next one, until the
	// 10 units there weigh at most 9: 6 s into it.
	{cost: 1, allowed: false, remain: 0, retry: 61 * time.Second, reset: 115 * time.Second},
	{advance: 61*time.Second - time.Microsecond, cost: 1, allowed: false, remain: 0, retry: time.Microsecond, reset: 54*time.Second + time.Microsecond},
	{advance: time.Microsecond, cost: 1, allowed: true, remain: 0, reset: 114 * time.Second},
	// previous window weighs ceil(10 × 54/60) = 9, current 1: wait
	// until it weighs 8, 12 s in
	{cost: 1, allowed: false, remain: 0, retry: 6 * time.Second, reset: 114 * time.Second},
	{advance: 6 * time.Second, cost: 1, allowed: true, remain: 0, reset: 108 * time.Second},
	{op: "peek", allowed: false, remain: 0, retry: 6 * time.Second, reset: 108 * time.Second},
	// Two windows later everything has faded: a cost equal to the limit fits.
	{advance: 108 * time.Second, cost: 10, allowed: true, remain: 0, reset: 2 * time.Minute},
	{op: "refund", cost: 3, allowed: true, remain: 3, reset: 2 * time.Minute},
	{op: "peek", allowed: true, remain: 3, reset: 2 * time.Minute},
	// refund past capacity: back to a full quota, and the state is gone
	{op: "refund", cost: 10, allowed: true, remain: 10},
	{cost: 10, allowed: true, remain: 0, reset: 2 * time.Minute},
	{op: "reset"},
	{op: "peek", allowed: true, remain: 10},
}

func TestSlidingWindowTable(t *testing.T) {
	lim := PerMinute(10)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { runAlgTable(t, b, SlidingWindow, lim, slidingWindowSteps) })
	}
}

// slidingWindowDaySteps: 1,000,000 a day is too many µs × units for 2^53,
// so the window weighs in 10 µs ticks. base is 11045 s into the UTC day.
var slidingWindowDaySteps = []astep{
	{cost: 1_000_000, allowed: true, remain: 0, reset: 161755 * time.Second},
	// Next day, the previous day's million must weigh 999,999: one
	// millionth of the day (8640 ticks, 86.4 ms) into it.
	{cost: 1, allowed: false, remain: 0, retry: 75355*time.Second + 86400*time.Microsecond, reset: 161755 * time.Second},
	{advance: 75355*time.Second + 86399*time.Microsecond, cost: 1, allowed: false, remain: 0, retry: time.Microsecond,
		reset: 24*time.Hour - 86399*time.Microsecond},
	{advance: time.Microsecond, cost: 1, allowed: true, remain: 0, reset: 48*time.Hour - 86400*time.Microsecond},
	{op: "peek", allowed: false, remain: 0, retry: 86400 * time.Microsecond, reset: 48*time.Hour - 86400*time.Microsecond},
}

func TestSlidingWindowDayTable(t *testing.T) {
	lim := PerDay(1_000_000)
	if tick := windowTick(lim.Rate, lim.Per.Microseconds()); tick != 10 {
		t.Fatalf("tick %d µs, want 10", tick)
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { runAlgTable(t, b, SlidingWindow, lim, slidingWindowDaySteps) })
	}
}

var slidingLogSteps = []astep{
	{cost: 2, allowed: true, remain: 3, reset: time.Minute},
	{advance: 10 * time.Second, cost: 3, allowed: true, remain: 0, reset: time.Minute},
	// full: the oldest entry (2 units at t0) expires at t0 + 60 s
	{advance: time.Second, cost: 1, allowed: false, remain: 0, retry: 49 * time.Second, reset: 59 * time.Second},
	{advance: 49*time.Second - time.Microsecond, cost: 1, allowed: false, remain: 0, retry: time.Microsecond, reset: 10*time.Second + time.Microsecond},
	// the window edge: exactly Per after it, the entry no longer counts
	{advance: time.Microsecond, cost: 2, allowed: true, remain: 0, reset: time.Minute},
	{cost: 1, allowed: false, remain: 0, retry: 10 * time.Second, reset: time.Minute},
	{advance: 10 * time.Second, cost: 3, allowed: true, remain: 0, reset: time.Minute},
	// refund 4 of the spend of 3 just logged: its 3 units come back,
	// and none of the 2 logged 10 s ago by another spend
	{op: "refund", cost: 4, allowed: true, remain: 3, reset: 50 * time.Second},
	{op: "peek", allowed: true, remain: 3, reset: 50 * time.Second},
	// a cost equal to the limit waits for the last entry to expire
	{cost: 5, allowed: false, remain: 3, retry: 50 * time.Second, reset: 50 * time.Second},
	{advance: 50 * time.Second, cost: 5, allowed: true, remain: 0, reset: time.Minute},
	// refund past capacity: the log empties, never below it
	{op: "refund", cost: 5, allowed: true, remain: 5},
	{cost: 5, allowed: true, remain: 0, reset: time.Minute},
	{op: "reset"},
	{op: "peek", allowed: true, remain: 5},
}

func TestSlidingLogTable(t *testing.T) {
	lim := PerMinute(5)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { runAlgTable(t, b, SlidingLog, lim, slidingLogSteps) })
	}
}

var tokenBucketRefundSteps = []astep{
	{cost: 10, allowed: true, remain: 0, reset: 10 * time.Second},
	{op: "refund", cost: 4, allowed: true, remain: 4, reset: 6 * time.Second},
	{advance: 3 * time.Second, op: "peek", allowed: true, remain: 7, reset: 3 * time.Second},
	// refund past capacity: a full bucket, never more
	{op: "refund", cost: 10, allowed: true, remain: 10},
	{cost: 10, allowed: true, remain: 0, reset: 10 * time.Second},
	{cost: 1, allowed: false, remain: 0, retry: time.Second, reset: 10 * time.Second},
	{op: "refund", cost: 0, allowed: true, remain: 0, reset: 10 * time.Second},
}

func TestTokenBucketRefundTable(t *testing.T) {
	lim := PerMinute(60).WithBurst(10) // a token a second
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { runAlgTable(t, b, TokenBucket, lim, tokenBucketRefundSteps) })
	}
}
