package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDenyCache on a real redis-server with the scripts' clock: after a
// denial, calls of the same or a larger cost are answered by the cache
// (ReasonCached, published untimed, no script call) until the denial's
// RetryAfter has passed; a smaller cost, another limit (a plan), a Peek,
// and calls after a Refund or Reset go to Redis.
func TestDenyCache(t *testing.T) {
	b := realBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	l := mustNew(t, b.client, PerSecond(10).WithBurst(5), append(b.opts, WithNamespace("deny"), WithDenyCache(100), WithSubscribers(rec))...)
	if res, err := l.AllowN(ctx, "abuser", 5); err != nil || !res.Allowed {
		t.Fatalf("spend the burst: %+v %v", res, err)
	}
	calls := func() int64 {
		_, n := decisionUsec(t, b.client)
		return n
	}
	denied, err := l.AllowN(ctx, "abuser", 3)
	if err != nil || denied.Allowed || denied.Reason != ReasonQuota || denied.RetryAfter != 300*time.Millisecond {
		t.Fatalf("the denial by Redis: %+v %v", denied, err)
	}
	before := calls()
	for _, cost := range []int64{3, 4, 5} {
		res, err := l.AllowN(ctx, "abuser", cost)
		if err != nil || res.Allowed || res.Reason != ReasonCached || res.RetryAfter != 300*time.Millisecond || !res.Time.IsZero() {
			t.Fatalf("cost %d after the denial: %+v %v, want the cached denial", cost, res, err)
		}
	}
	if got := calls(); got != before {
		t.Fatalf("%d script calls for cached denials, want none", got-before)
	}
	events := rec.all()
	if last := events[len(events)-1]; last.Result.Reason != ReasonCached || !last.Start.IsZero() || last.Duration != 0 || last.Err != nil {
		t.Errorf("event of a cached denial: %+v, want Reason cached, untimed", last)
	}
	b.advance(100 * time.Millisecond)
	if res, _ := l.AllowN(ctx, "abuser", 3); res.Reason != ReasonCached || res.RetryAfter != 200*time.Millisecond {
		t.Errorf("100 ms later: %+v, want cached with 200 ms left", res)
	}
	if res, _ := l.AllowN(ctx, "abuser", 1); res.Reason != ReasonQuota || !res.Allowed {
		t.Errorf("a smaller cost: %+v, want Redis's allowance (1 token refilled)", res)
	}
	plan, err := l.WithLimit(PerSecond(100).WithBurst(50))
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := plan.AllowN(ctx, "abuser", 3); res.Reason != ReasonQuota {
		t.Errorf("under another limit: %+v, want Redis's decision", res)
	}
	if res, _ := l.Peek(ctx, "abuser"); res.Reason != ReasonQuota {
		t.Errorf("Peek: %+v, want Redis's", res)
	}
	b.advance(200 * time.Millisecond)
	if res, _ := l.AllowN(ctx, "abuser", 3); res.Reason != ReasonQuota {
		t.Errorf("after the RetryAfter: %+v, want Redis's decision", res)
	}

	// Refund and Reset forget the identity's denial.
	spent, _ := l.AllowN(ctx, "refunder", 5)
	if res, _ := l.AllowN(ctx, "refunder", 5); res.Allowed {
		t.Fatalf("over the burst: %+v", res)
	}
	if _, err := l.Refund(ctx, "refunder", spent, 5); err != nil {
		t.Fatal(err)
	}
	if res, _ := l.AllowN(ctx, "refunder", 5); !res.Allowed || res.Reason != ReasonQuota {
		t.Errorf("after a refund: %+v, want Redis's allowance", res)
	}
	if res, _ := l.AllowN(ctx, "refunder", 5); res.Allowed {
		t.Fatalf("over the burst again: %+v", res)
	}
	if err := l.Reset(ctx, "refunder"); err != nil {
		t.Fatal(err)
	}
	if res, _ := l.AllowN(ctx, "refunder", 5); !res.Allowed || res.Reason != ReasonQuota {
		t.Errorf("after a reset: %+v, want Redis's allowance", res)
	}
}

// TestDenyCacheNoOverAdmission hammers one identity from 16 goroutines on a
// real redis-server and real time: with the cache on, what is admitted
// stays within burst + rate × elapsed, and most calls never reach Redis.
func TestDenyCacheNoOverAdmission(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	lim := PerSecond(20).WithBurst(5)
	l := mustNew(t, c, lim, WithNamespace("deny-hammer"), WithDenyCache(10), WithTimeout(5*time.Second))
	start, err := redistestTime(c)
	if err != nil {
		t.Fatal(err)
	}
	var admitted, cached, total atomic.Int64
	stop := time.Now().Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := 0; i < 20000 && time.Now().Before(stop); i++ {
				res, err := l.Allow(ctx, "hot")
				if err != nil {
					t.Error(err)
					return
				}
				total.Add(1)
				switch {
				case res.Allowed:
					admitted.Add(1)
				case res.Reason == ReasonCached:
					cached.Add(1)
				}
			}
		})
	}
	wg.Wait()
	end, err := redistestTime(c)
	if err != nil {
		t.Fatal(err)
	}
	bound := float64(lim.Capacity()) + float64(lim.Rate)*end.Sub(start).Seconds()
	t.Logf("%d calls: %d admitted (bound %.1f), %d answered by the cache", total.Load(), admitted.Load(), bound, cached.Load())
	if float64(admitted.Load()) > bound+1 {
		t.Errorf("%d admitted, above burst + rate × elapsed = %.1f", admitted.Load(), bound)
	}
	if cached.Load() < total.Load()/2 {
		t.Errorf("only %d of %d calls answered by the cache", cached.Load(), total.Load())
	}
}

// TestDenyCacheBounded: the cache never holds more than about maxKeys
// denials (rounded up to whole shards).
func TestDenyCacheBounded(t *testing.T) {
	c := newDenyCache(32)
	now := time.Now()
	for i := range 1000 {
		c.put("ns:token_bucket:{"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676))+"}", PerSecond(1), 1,
			Result{RetryAfter: time.Second}, now)
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].m)
	}
	if n == 0 || n > denyShards*c.perShard || n > 32+denyShards {
		t.Fatalf("%d denials held for maxKeys 32", n)
	}
}

// TestDenyCacheOptions: the option's value and where it applies.
func TestDenyCacheOptions(t *testing.T) {
	b := miniBackend(t)
	for name, err := range map[string]error{
		"zero":   func() error { _, err := New(b.client, PerSecond(1), WithDenyCache(0)); return err }(),
		"shadow": func() error { _, err := New(b.client, PerSecond(1), WithDenyCache(10), WithShadow()); return err }(),
		"multi": func() error {
			_, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(1)}}, WithDenyCache(10))
			return err
		}(),
		"concurrency": func() error { _, err := NewConcurrency(b.client, 1, WithDenyCache(10)); return err }(),
	} {
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
}
