package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// step is one call in a behaviour table, made after moving the clock by
// advance.
type step struct {
	advance time.Duration
	op      string // "allow" (default), "peek", "reset"
	cost    int64
	allowed bool
	remain  int64
	retry   time.Duration
	reset   time.Duration
}

func runTable(t *testing.T, b backend, lim Limit, steps []step) {
	t.Helper()
	ctx := context.Background()
	l := mustNew(t, b.client, lim, append(b.opts, WithNamespace("table"))...)
	const id = "user:table"
	for i, s := range steps {
		b.advance(s.advance)
		var (
			res Result
			err error
		)
		switch s.op {
		case "", "allow":
			res, err = l.AllowN(ctx, id, s.cost)
		case "peek":
			res, err = l.Peek(ctx, id)
		case "reset":
			if err := l.Reset(ctx, id); err != nil {
				t.Fatalf("step %d: Reset: %v", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d (%s cost %d): %v", i, s.op, s.cost, err)
		}
		if res.Reason != ReasonQuota || res.Limit != lim {
			t.Errorf("step %d: reason %v limit %v, want quota %v", i, res.Reason, res.Limit, lim)
		}
		if res.Allowed != s.allowed || res.Remaining != s.remain || res.RetryAfter != s.retry || res.ResetAfter != s.reset {
			t.Errorf("step %d (%s cost %d after %v): got allowed=%v remaining=%d retry=%v reset=%v, want %v %d %v %v",
				i, s.op, s.cost, s.advance, res.Allowed, res.Remaining, res.RetryAfter, res.ResetAfter,
				s.allowed, s.remain, s.retry, s.reset)
		}
	}
}

func TestTokenBucketTable(t *testing.T) {
	tables := []struct {
		name  string
		limit Limit
		steps []step
	}{
		{
			// One token a second, bursts of 10.
			name:  "refill burst weighted",
			limit: PerMinute(60).WithBurst(10),
			steps: []step{
				{cost: 1, allowed: true, remain: 9, reset: time.Second},
				{cost: 9, allowed: true, remain: 0, reset: 10 * time.Second},
				{cost: 1, allowed: false, remain: 0, retry: time.Second, reset: 10 * time.Second},
				{advance: 500 * time.Millisecond, cost: 1, allowed: false, remain: 0, retry: 500 * time.Millisecond, reset: 9500 * time.Millisecond},
				{advance: 500 * time.Millisecond, cost: 1, allowed: true, remain: 0, reset: 10 * time.Second},
				// a denied call spends nothing: the 3 tokens are still there
				{advance: 3 * time.Second, cost: 5, allowed: false, remain: 3, retry: 2 * time.Second, reset: 7 * time.Second},
				{op: "peek", allowed: true, remain: 3, reset: 7 * time.Second},
				{cost: 3, allowed: true, remain: 0, reset: 10 * time.Second},
				// a cost equal to the burst fits an idle bucket, never more than the burst refills
				{advance: time.Hour, cost: 10, allowed: true, remain: 0, reset: 10 * time.Second},
				{cost: 0, allowed: true, remain: 0, reset: 10 * time.Second},
				{op: "reset"},
				{cost: 10, allowed: true, remain: 0, reset: 10 * time.Second},
			},
		},
		{
			// 7 a minute: a token every 8571428.57 µs, exact only in units.
			name:  "fractional interval",
			limit: PerMinute(7),
			steps: []step{
				{cost: 7, allowed: true, remain: 0, reset: time.Minute},
				{advance: 8571428 * time.Microsecond, cost: 1, allowed: false, remain: 0, retry: time.Microsecond, reset: 51428572 * time.Microsecond},
				{advance: time.Microsecond, cost: 1, allowed: true, remain: 0, reset: time.Minute},
				{advance: 17142856 * time.Microsecond, cost: 2, allowed: false, remain: 1, retry: time.Microsecond, reset: 42857144 * time.Microsecond},
				{advance: time.Microsecond, cost: 2, allowed: true, remain: 0, reset: time.Minute},
			},
		},
		{
			// Default burst is the rate; a long period keeps numbers large.
			name:  "per day",
			limit: PerDay(10000),
			steps: []step{
				{cost: 10000, allowed: true, remain: 0, reset: 24 * time.Hour},
				{cost: 1, allowed: false, remain: 0, retry: 8640 * time.Millisecond, reset: 24 * time.Hour},
				{advance: 12 * time.Hour, cost: 5000, allowed: true, remain: 0, reset: 24 * time.Hour},
			},
		},
	}
	for _, tc := range tables {
		for _, b := range backends(t) {
			t.Run(tc.name+"/"+b.name, func(t *testing.T) { runTable(t, b, tc.limit, tc.steps) })
		}
	}
}

// TestLimitChange checks that state written under one limit is read
// sensibly under another: the fraction of a token carries over.
func TestLimitChange(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			old := mustNew(t, b.client, PerMinute(60).WithBurst(10), b.opts...)
			if _, err := old.AllowN(ctx, "u", 4); err != nil {
				t.Fatal(err)
			}
			// Same namespace and algorithm, tier upgraded: 2 a second.
			upgraded := mustNew(t, b.client, PerSecond(2).WithBurst(10), b.opts...)
			res, err := upgraded.AllowN(ctx, "u", 6)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Allowed || res.Remaining != 0 || res.ResetAfter != 5*time.Second {
				t.Fatalf("after limit change: %+v, want allowed, 0 left, full in 5s", res)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		b := miniBackend(t)
		l := mustNew(t, b.client, PerSecond(10))
		key, _ := l.Key("ttl")
		if _, err := l.AllowN(context.Background(), "ttl", 5); err != nil {
			t.Fatal(err)
		}
		if !b.exists(key) {
			t.Fatal("no key after a spend")
		}
		b.advance(499 * time.Millisecond)
		if !b.exists(key) {
			t.Fatal("key gone before the bucket refilled")
		}
		b.advance(2 * time.Millisecond)
		if b.exists(key) {
			t.Fatal("key survived the time to refill")
		}
	})
	t.Run("redis", func(t *testing.T) {
		// Real TIME and real expiry: 5 of 1000/s refill in 5 ms.
		srv := redistestStart(t)
		c := srv.Client(t)
		ctx := context.Background()
		l := mustNew(t, c, PerSecond(1000).WithBurst(100))
		key, _ := l.Key("ttl")
		if _, err := l.AllowN(ctx, "ttl", 5); err != nil {
			t.Fatal(err)
		}
		pttl, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if pttl <= 0 || pttl > 5*time.Millisecond {
			t.Fatalf("PTTL %v, want in (0, 5ms]", pttl)
		}
		deadline := time.Now().Add(5 * time.Second)
		for c.Exists(ctx, key).Val() == 1 {
			if time.Now().After(deadline) {
				t.Fatal("key still there 5s after a 5ms TTL")
			}
			time.Sleep(time.Millisecond)
		}
		// Idle long enough, the identity is back at a full burst.
		res, err := l.AllowN(ctx, "ttl", 100)
		if err != nil || !res.Allowed {
			t.Fatalf("full burst after expiry: %+v %v", res, err)
		}
	})
}

// TestRealTimeRefill uses Redis TIME on a real server: after the bucket is
// drained, it refills as Redis's clock moves.
func TestRealTimeRefill(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	l := mustNew(t, c, PerSecond(100).WithBurst(5)) // a token every 10 ms
	drained, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.AllowN(ctx, "refill", 5)
	if err != nil || !res.Allowed || res.Remaining != 0 {
		t.Fatalf("drain: %+v %v, want allowed with nothing left", res, err)
	}
	res, err = l.Allow(ctx, "refill")
	if err != nil {
		t.Fatal(err)
	}
	start, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Allowed at once only if Redis's clock moved a token's 10 ms since
	// just before the drain (a stalled machine).
	if res.Allowed && start.Sub(drained) < 10*time.Millisecond {
		t.Fatalf("allowed %v after the drain, before a token could refill: %+v", start.Sub(drained), res)
	}
	// Wait on Redis's own clock, not ours, for two intervals to pass.
	for {
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if now.Sub(start) >= 20*time.Millisecond {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	res, err = l.Allow(ctx, "refill")
	if err != nil || !res.Allowed {
		t.Fatalf("after 20ms of Redis TIME: %+v %v", res, err)
	}
}

func TestBadInput(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	l := mustNew(t, b.client, PerSecond(10), WithSubscribers(rec))
	cases := []badCase{
		{"negative cost", func() error { _, err := l.AllowN(ctx, "u", -1); return err }, ErrInvalidCost},
		{"cost above burst", func() error { _, err := l.AllowN(ctx, "u", 11); return err }, ErrInvalidCost},
		{"wait cost above burst", func() error { _, err := l.Wait(ctx, "u", 11); return err }, ErrInvalidCost},
		{"empty identity", func() error { _, err := l.Allow(ctx, ""); return err }, ErrInvalidIdentity},
		{"huge identity", func() error { _, err := l.Allow(ctx, string(make([]byte, MaxIdentityLen+1))); return err }, ErrInvalidIdentity},
		{"peek empty identity", func() error { _, err := l.Peek(ctx, ""); return err }, ErrInvalidIdentity},
		{"reset empty identity", func() error { return l.Reset(ctx, "") }, ErrInvalidIdentity},
		{"nil client", func() error { _, err := New(nil, PerSecond(1)); return err }, ErrNilClient},
		{"zero rate", func() error { _, err := New(b.client, Limit{Per: time.Second}); return err }, ErrInvalidLimit},
		{"negative rate", func() error { _, err := New(b.client, PerSecond(-5)); return err }, ErrInvalidLimit},
		{"zero per", func() error { _, err := New(b.client, Limit{Rate: 1}); return err }, ErrInvalidLimit},
		{"negative per", func() error { _, err := New(b.client, Limit{Rate: 1, Per: -time.Second}); return err }, ErrInvalidLimit},
		{"sub-microsecond per", func() error { _, err := New(b.client, Limit{Rate: 1, Per: 1500 * time.Nanosecond}); return err }, ErrInvalidLimit},
		{"negative burst", func() error { _, err := New(b.client, PerSecond(1).WithBurst(-1)); return err }, ErrInvalidLimit},
		{"burst too large", func() error { _, err := New(b.client, PerHour(1).WithBurst(1<<40)); return err }, ErrInvalidLimit},
		{"bad namespace", func() error { _, err := New(b.client, PerSecond(1), WithNamespace("a:b")); return err }, ErrInvalidOption},
		{"brace namespace", func() error { _, err := New(b.client, PerSecond(1), WithNamespace("a{b}")); return err }, ErrInvalidOption},
		{"empty namespace", func() error { _, err := New(b.client, PerSecond(1), WithNamespace("")); return err }, ErrInvalidOption},
		{"short secret", func() error { _, err := New(b.client, PerSecond(1), WithIdentityKey([]byte("short"))); return err }, ErrInvalidOption},
		{"zero timeout", func() error { _, err := New(b.client, PerSecond(1), WithTimeout(0)); return err }, ErrInvalidOption},
		{"unknown algorithm", func() error { _, err := New(b.client, PerSecond(1), WithAlgorithm(Algorithm(200))); return err }, ErrInvalidOption},
		{"unknown fail strategy", func() error { _, err := New(b.client, PerSecond(1), WithFailStrategy(FailStrategy(9))); return err }, ErrInvalidOption},
		{"nil bus", func() error { _, err := New(b.client, PerSecond(1), WithBus(nil)); return err }, ErrInvalidOption},
		{"bad url", func() error { _, err := NewFromURL("http://nope", PerSecond(1)); return err }, ErrInvalidURL},
		{"url bad db", func() error { _, err := NewFromURL("redis://:secret@localhost:6379/x", PerSecond(1)); return err }, ErrInvalidURL},
	}
	checkBadInput(t, b.client, rec, cases)
	// The URL error must not echo the password, whatever part is bad.
	for _, u := range []string{"redis://:hunter2hunter2@localhost:6379/x", "redis://user:hunter2hunter2@host:badport/0"} {
		_, err := NewFromURL(u, PerSecond(1))
		if !errors.Is(err, ErrInvalidURL) || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("URL error %v echoes the password", err)
		}
	}
}
