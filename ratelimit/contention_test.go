package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// hammer runs goroutines on each of the decide functions (one per limiter
// instance) on one identity until stop or the call budget, and counts.
func hammer(decide []func(context.Context) (Result, error), goroutines int, stop time.Time) (allowed, denied, failed int64) {
	var a, d, f atomic.Int64
	var wg sync.WaitGroup
	for _, call := range decide {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for calls := 0; calls < 20000 && time.Now().Before(stop); calls++ {
					res, err := call(context.Background())
					switch {
					case err != nil:
						f.Add(1)
					case res.Allowed:
						a.Add(1)
					default:
						d.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	return a.Load(), d.Load(), f.Load()
}

// instanceClients returns n clients to one server, as n processes would
// have.
func instanceClients(t *testing.T, srv *redistest.Server, n, pool int) []*redis.Client {
	t.Helper()
	var cs []*redis.Client
	for range n {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: pool})
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// TestExactUnderContention freezes the script clock on a real server and
// hammers one identity from two limiter instances: with no refill and no
// window change, every algorithm must admit exactly its quota, no more (a
// lost update) and no less (a spurious denial). The multi-limit call must
// admit exactly its tighter quota and spend it on both.
func TestExactUnderContention(t *testing.T) {
	srv := redistestStart(t)
	clients := instanceClients(t, srv, 2, 20)
	frozen := withClock(func() time.Time { return base })
	const quota = 300
	for _, alg := range limiterAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			var calls []func(context.Context) (Result, error)
			for _, c := range clients {
				l := mustNew(t, c, PerHour(quota), frozen, WithAlgorithm(alg), WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
				calls = append(calls, func(ctx context.Context) (Result, error) { return l.Allow(ctx, "hot") })
			}
			allowed, denied, failed := hammer(calls, 20, time.Now().Add(time.Second))
			t.Logf("allowed %d, denied %d, failed %d", allowed, denied, failed)
			if failed != 0 || allowed != quota || denied == 0 {
				t.Fatalf("allowed %d of quota %d (denied %d, failed %d)", allowed, quota, denied, failed)
			}
		})
	}
	t.Run("multi", func(t *testing.T) {
		quotas := []Quota{
			{Name: "hourly", Limit: PerHour(quota), Algorithm: SlidingWindow},
			{Name: "daily", Limit: PerDay(2 * quota), Algorithm: FixedWindow},
		}
		var calls []func(context.Context) (Result, error)
		var first *MultiLimiter
		for _, c := range clients {
			m := mustNewMulti(t, c, quotas, frozen, WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
			first = m
			calls = append(calls, func(ctx context.Context) (Result, error) {
				res, err := m.Allow(ctx, "hot")
				return res.Result, err
			})
		}
		allowed, denied, failed := hammer(calls, 20, time.Now().Add(time.Second))
		if failed != 0 || allowed != quota || denied == 0 {
			t.Fatalf("allowed %d of quota %d (denied %d, failed %d)", allowed, quota, denied, failed)
		}
		res, err := first.Peek(context.Background(), "hot")
		if err != nil {
			t.Fatal(err)
		}
		// Denied calls spent nothing on the daily quota.
		if res.Quotas[1].Remaining != quota {
			t.Fatalf("daily quota has %d left, want %d: denials spent it", res.Quotas[1].Remaining, quota)
		}
	})
}

// TestBoundsUnderContention runs each window algorithm on Redis TIME with
// short windows, two instances and many goroutines, and checks the allowed
// total against what the algorithm guarantees over the windows the run
// touched (measured on Redis's clock):
//   - FixedWindow and SlidingWindow admit at most the quota per window;
//   - SlidingLog admits at most the quota in any span of one window, so at
//     most quota × (elapsed/window + 1).
//
// And that they do not grossly under-admit: at least half the quota per
// window elapsed (the load far exceeds it; the margin is for loaded CI
// machines).
func TestBoundsUnderContention(t *testing.T) {
	srv := redistestStart(t)
	clients := instanceClients(t, srv, 2, 20)
	admin := srv.Client(t)
	const (
		quota  = 40
		window = 100 * time.Millisecond
	)
	for _, alg := range windowAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			var calls []func(context.Context) (Result, error)
			for _, c := range clients {
				l := mustNew(t, c, Limit{Rate: quota, Per: window}, WithAlgorithm(alg), WithNamespace("bounds"),
					WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
				calls = append(calls, func(ctx context.Context) (Result, error) { return l.Allow(ctx, "hot") })
			}
			ctx := context.Background()
			before, err := admin.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			allowed, denied, failed := hammer(calls, 20, time.Now().Add(time.Second))
			after, err := admin.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			elapsed := after.Sub(before)
			w := window.Microseconds()
			windows := after.UnixMicro()/w - before.UnixMicro()/w + 1 // windows touched
			var bound int64
			switch alg {
			case SlidingLog:
				bound = quota * (int64(elapsed/window) + 1)
			default:
				bound = quota * windows
			}
			floor := int64(0.5 * quota * float64(elapsed) / float64(window))
			t.Logf("allowed %d, denied %d, failed %d over %v of Redis TIME (%d windows); bound %d, floor %d",
				allowed, denied, failed, elapsed, windows, bound, floor)
			if failed != 0 {
				t.Errorf("%d calls failed", failed)
			}
			if allowed > bound {
				t.Fatalf("over-admission: allowed %d > bound %d", allowed, bound)
			}
			if allowed < floor {
				t.Fatalf("allowed %d < half the quota per window elapsed (%d): under-admission, or too light a load (%d denied)",
					allowed, floor, denied)
			}
		})
	}
}
