package ratelimit

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// TestShardSplit: the shards' rates and bursts add up to the limit exactly,
// differ by at most one, and a limit too small to split is refused.
func TestShardSplit(t *testing.T) {
	for _, lim := range []Limit{PerSecond(10), PerMinute(100).WithBurst(7), PerSecond(3), {Rate: 1_000_003, Per: time.Hour, Burst: 999_999}} {
		for n := 1; n <= 6; n++ {
			if lim.Rate < int64(n) || lim.Capacity() < int64(n) {
				if _, err := shardPolicies(TokenBucket, lim, n); !errors.Is(err, ErrInvalidLimit) {
					t.Errorf("%v over %d shards: %v, want ErrInvalidLimit", lim, n, err)
				}
				continue
			}
			var rate, burst, minB, maxB int64
			minB = 1 << 62
			for i := range n {
				s := shardLimit(lim, i, n)
				rate, burst = rate+s.Rate, burst+s.Capacity()
				minB, maxB = min(minB, s.Capacity()), max(maxB, s.Capacity())
			}
			if rate != lim.Rate || burst != lim.Capacity() || maxB-minB > 1 {
				t.Errorf("%v over %d shards: rates sum to %d, bursts to %d (spread %d)", lim, n, rate, burst, maxB-minB)
			}
		}
	}
}

// TestShardKeys: an identity's shards lie in n different slots, the i-th in
// the i-th n-th of the slot space, under the limiter's key layout, the same
// every time (every process agrees).
func TestShardKeys(t *testing.T) {
	k := newKeyer("ns:token_bucket:", nil)
	for _, n := range []int{2, 3, 6, 16} {
		for _, id := range []string{"a", "tenant:42", "203.0.113.7"} {
			keys, err := k.shardKeys(id, n)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := k.shardKeys(id, n)
			for i, key := range keys {
				slot := int(slotOf(key))
				if slot < i*16384/n || slot >= (i+1)*16384/n {
					t.Errorf("%s shard %d of %d: slot %d outside [%d, %d)", id, i, n, slot, i*16384/n, (i+1)*16384/n)
				}
				if again[i] != key {
					t.Errorf("%s shard %d: keys %s and %s", id, i, key, again[i])
				}
			}
		}
	}
	if _, err := k.shardKeys("", 3); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("empty identity: %v", err)
	}
}

// TestShardsOnRedis: a sharded limiter on a real redis-server with the
// scripts' clock: cost 1 is allowed until every shard is empty (nothing is
// lost to fragmentation when every shard is asked), a denial's RetryAfter is
// the soonest shard's, Peek adds the shards up, each decision names its
// shard, a refund goes back to the shard that spent, and WithLimit splits
// the new limit.
func TestShardsOnRedis(t *testing.T) {
	b := realBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	l := mustNew(t, b.client, PerSecond(10), append(b.opts, WithNamespace("shards"), WithShards(3), WithSubscribers(rec))...)
	var spent []Result
	for i := range 10 {
		res, err := l.Allow(ctx, "hot")
		if err != nil || !res.Allowed {
			t.Fatalf("call %d of the burst of 10: %+v %v", i, res, err)
		}
		spent = append(spent, res)
	}
	res, err := l.Allow(ctx, "hot")
	if err != nil || res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 300*time.Millisecond {
		t.Fatalf("past the burst: %+v %v, want a denial until a shard refills (at most 3 tokens' time)", res, err)
	}
	seen := map[int]int{}
	for _, e := range rec.all() {
		seen[e.Shard]++
		if e.Shard < 1 || e.Shard > 3 || e.Key != mustShardKey(t, l, "hot", e.Shard) {
			t.Errorf("event shard %d key %s", e.Shard, e.Key)
		}
	}
	if len(seen) != 3 {
		t.Errorf("decisions by shard %v, want all three", seen)
	}
	if p, err := l.Peek(ctx, "hot"); err != nil || p.Allowed || p.Remaining != 0 {
		t.Errorf("Peek with every shard empty: %+v %v", p, err)
	}
	// Give back one unit to the shard of the first spend: that shard, and
	// only it, has a token again.
	r, err := l.Refund(ctx, "hot", spent[0], 1)
	if err != nil || r.Remaining != 1 {
		t.Fatalf("refund: %+v %v", r, err)
	}
	if p, _ := l.Peek(ctx, "hot"); !p.Allowed || p.Remaining != 1 {
		t.Errorf("Peek after the refund: %+v, want 1 left in all", p)
	}
	if _, err := l.Refund(ctx, "hot", Result{Allowed: true, Reason: ReasonQuota, Time: time.Now()}, 1); !errors.Is(err, ErrInvalidCost) {
		t.Errorf("refund of a Result naming no shard: %v, want ErrInvalidCost", err)
	}
	b.advance(time.Second)
	if p, _ := l.Peek(ctx, "hot"); !p.Allowed || p.Remaining != 10 {
		t.Errorf("a second later: %+v, want the full 10", p)
	}
	big, err := l.WithLimit(PerSecond(30))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 40 {
		if res, _ := big.Allow(ctx, "hot"); res.Allowed {
			n++
		}
	}
	if n < 10 || n > 30 {
		t.Errorf("%d allowed under 30 a second split over 3 shards after 10 spent tokens refilled", n)
	}
	if err := l.Reset(ctx, "hot"); err != nil {
		t.Fatal(err)
	}
	if p, _ := l.Peek(ctx, "hot"); p.Remaining != 10 {
		t.Errorf("after Reset: %+v", p)
	}
}

func mustShardKey(t *testing.T, l *Limiter, id string, shard int) string {
	t.Helper()
	keys, err := l.keys.shardKeys(id, l.shards)
	if err != nil {
		t.Fatal(err)
	}
	return keys[shard-1]
}

// TestShardOptions: where the options apply and what they take.
func TestShardOptions(t *testing.T) {
	b := miniBackend(t)
	for name, err := range map[string]error{
		"zero shards": func() error { _, err := New(b.client, PerSecond(10), WithShards(0)); return err }(),
		"tries past":  func() error { _, err := New(b.client, PerSecond(10), WithShards(2), WithShardTries(3)); return err }(),
		"multi": func() error {
			_, err := NewMulti(b.client, []Quota{{Name: "a", Limit: PerSecond(9)}}, WithShards(3))
			return err
		}(),
		"concurrency":      func() error { _, err := NewConcurrency(b.client, 9, WithShards(3)); return err }(),
		"tries without n?": func() error { _, err := New(b.client, PerSecond(10), WithShardTries(2)); return err }(),
	} {
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := New(b.client, PerSecond(2), WithShards(3)); !errors.Is(err, ErrInvalidLimit) {
		t.Errorf("2 a second over 3 shards: %v, want ErrInvalidLimit", err)
	}
	l := mustNew(t, b.client, PerSecond(10), WithShards(3))
	if _, err := l.AllowN(context.Background(), "u", 4); !errors.Is(err, ErrInvalidCost) {
		t.Errorf("a cost above the smallest shard's burst (3): %v, want ErrInvalidCost", err)
	}
}

// TestShardsOnCluster: on a real 3-master Redis Cluster, one identity's 3
// shards sit on 3 different masters, and one hot identity hammered from 32
// goroutines for a bounded time is admitted no more than the limit allows
// over that time (elapsed on Redis TIME), for every algorithm, and at least
// 90% of it for the token bucket and the sliding log (the window counters
// are bounded per aligned window, which the run need not fill).
func TestShardsOnCluster(t *testing.T) {
	if testing.Short() && os.Getenv(redistest.RequireEnv) != "1" {
		t.Skip("a 3-master cluster: skipped with -short")
	}
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	ctx := context.Background()
	for _, alg := range limiterAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			lim := Limit{Rate: 300, Per: time.Second} // the windows' quota of 300 a second
			if alg == TokenBucket {
				lim.Burst = 30
			}
			l := mustNew(t, cc, lim, WithAlgorithm(alg), WithNamespace("hot"), WithShards(3), WithTimeout(5*time.Second))
			keys, err := l.keys.shardKeys("tenant", 3)
			if err != nil {
				t.Fatal(err)
			}
			masters := map[string]bool{}
			for _, k := range keys {
				node, err := cc.MasterForKey(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				masters[node.Options().Addr] = true
			}
			if len(masters) != 3 {
				t.Errorf("3 shards on %d masters: %v", len(masters), masters)
			}
			node, err := cc.MasterForKey(ctx, keys[0])
			if err != nil {
				t.Fatal(err)
			}
			start, err := redistest.Time(ctx, node)
			if err != nil {
				t.Fatal(err)
			}
			var admitted atomic.Int64
			stop := time.Now().Add(700 * time.Millisecond)
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for i := 0; i < 5000 && time.Now().Before(stop); i++ {
						res, err := l.Allow(ctx, "tenant")
						if err != nil {
							t.Error(err)
							return
						}
						if res.Allowed {
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			end, err := redistest.Time(ctx, node)
			if err != nil {
				t.Fatal(err)
			}
			elapsed := end.Sub(start)
			var bound float64
			switch alg {
			case TokenBucket:
				bound = float64(lim.Capacity()) + float64(lim.Rate)*elapsed.Seconds()
			case SlidingLog:
				// Any window of length Per holds at most the quota.
				bound = float64(lim.Rate) * float64((elapsed+lim.Per-1)/lim.Per)
			default:
				// A window algorithm grants its quota per aligned window:
				// the windows elapsed touches.
				bound = float64(lim.Rate) * float64(elapsed/lim.Per+2)
			}
			got := float64(admitted.Load())
			t.Logf("%v: %d admitted in %v (Redis TIME), bound %.0f (%.0f%%)", alg, admitted.Load(), elapsed, bound, 100*got/bound)
			if got > bound+1 {
				t.Errorf("%.0f admitted, above the bound %.0f", got, bound)
			}
			if alg == TokenBucket || alg == SlidingLog {
				if got < 0.9*bound {
					t.Errorf("%.0f admitted, under 90%% of the bound %.0f", got, bound)
				}
			}
		})
	}
}

// TestShardsEvents: a sharded denial of every shard and a fail strategy's
// decision are each one event; shadow mode lets the denial through.
func TestShardsEvents(t *testing.T) {
	b := realBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	shadow := mustNew(t, b.client, PerSecond(4), append(b.opts, WithNamespace("shadow-shards"), WithShards(2), WithShadow(), WithSubscribers(rec))...)
	for range 5 {
		if _, err := shadow.Allow(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	events := rec.all()
	if len(events) != 5 || events[4].Result.Reason != ReasonShadow || !events[4].Result.Allowed {
		t.Fatalf("%d events, last %+v: want 5, the fifth a shadow pass", len(events), events[len(events)-1])
	}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	closed := mustNew(t, dead, PerSecond(4), WithShards(2), WithFailStrategy(FailClosed), WithSubscribers(rec))
	res, err := closed.Allow(ctx, "u")
	var be *BackendError
	if !errors.As(err, &be) || res.Allowed || res.Reason != ReasonFailClosed {
		t.Fatalf("Redis down: %+v %v", res, err)
	}
	if n := len(rec.all()); n != 6 {
		t.Errorf("%d events, want one more for the failed call", n)
	}
}
