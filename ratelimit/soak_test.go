package ratelimit

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// soakEnv names the environment variable that sets the soak's length:
// RATELIMIT_SOAK=10m go test -run TestSoak -v ./ratelimit. Without it the
// soak runs for soakSmoke, a smoke test sized for CI.
const soakEnv = "RATELIMIT_SOAK"

const soakSmoke = 3 * time.Second

// soakSample is one look at the process and at Redis during the soak.
type soakSample struct {
	at         time.Duration
	heapInuse  uint64
	goroutines int
	keys       int64
}

// TestSoak runs every algorithm, the multi-limit call and the leases on many
// identities from several goroutines for a while, on short periods and a
// short lease TTL, half of the leases never released. It checks what a long
// run would reveal: the heap in use stays level (sampled after a GC), no
// goroutine is left behind, and no key is leaked: once the calls stop and
// the TTLs pass, Redis holds no key at all (the unreleased leases expired
// with their keys).
func TestSoak(t *testing.T) {
	run := soakSmoke
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 10m", soakEnv, v)
		}
		run = d
	}
	const (
		workers    = 8
		identities = 5000
		pool       = 16
	)
	srv := redistestStart(t)
	admin := srv.Client(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: pool})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()

	// Every state lives at most about a second: the longest TTL is two
	// windows of the sliding window.
	var decisions atomic.Int64
	count := SubscriberFunc(func(context.Context, Event) { decisions.Add(1) })
	opts := []Option{WithTimeout(2 * time.Second), WithSubscribers(count)}
	const period = 500 * time.Millisecond
	var calls []func(id string) error
	for _, alg := range limiterAlgorithms {
		l := mustNew(t, c, Limit{Rate: 5, Per: period}, append(opts, WithAlgorithm(alg), WithNamespace("soak"))...)
		calls = append(calls, func(id string) error {
			res, err := l.AllowN(ctx, id, 2)
			if err != nil {
				return err
			}
			_, err = l.Refund(ctx, id, res, 1)
			return err
		})
	}
	m := mustNewMulti(t, c, []Quota{
		{Name: "a", Limit: Limit{Rate: 5, Per: period}},
		{Name: "b", Limit: Limit{Rate: 20, Per: period}, Algorithm: SlidingWindow},
		{Name: "c", Limit: Limit{Rate: 50, Per: period}, Algorithm: FixedWindow},
	}, append(opts, WithNamespace("soak"))...)
	calls = append(calls, func(id string) error {
		_, err := m.AllowCosts(ctx, id, 1, 2, 3)
		return err
	})
	conc := mustNewConcurrency(t, c, 3, append(opts, WithNamespace("soak"), WithLeaseTTL(period))...)
	var abandoned atomic.Int64
	calls = append(calls, func(id string) error {
		lease, _, err := conc.Acquire(ctx, id, 1)
		if err != nil || lease == nil {
			return err
		}
		if rand.IntN(2) == 0 {
			abandoned.Add(1) // never released: it must expire on its own
			return nil
		}
		return lease.Release(ctx)
	})

	sample := func(start time.Time) soakSample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		n, err := admin.DBSize(ctx).Result()
		if err != nil {
			t.Errorf("DBSIZE: %v", err)
		}
		return soakSample{at: time.Since(start), heapInuse: ms.HeapInuse, goroutines: runtime.NumGoroutine(), keys: n}
	}

	// Warm up: dial the pool and load every script.
	for _, call := range calls {
		if err := call("warm"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	first := sample(start)
	stop := make(chan struct{})
	var failures atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := "soak-" + strconv.Itoa(r.IntN(identities))
				if err := calls[n%len(calls)](id); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	every := max(run/40, 250*time.Millisecond)
	var samples []soakSample
	ticker := time.NewTicker(every)
	for deadline := time.After(run); ; {
		select {
		case <-ticker.C:
			samples = append(samples, sample(start))
			continue
		case <-deadline:
		}
		break
	}
	ticker.Stop()
	close(stop)
	wg.Wait()
	end := sample(start)

	if len(samples) < 4 {
		t.Fatalf("only %d samples", len(samples))
	}
	// The first quarter warms up (pool, caches, sync.Pool); the rest must
	// stay level.
	warm := samples[len(samples)/4]
	var peakHeap uint64
	var peakKeys int64
	peakG := 0
	for _, s := range samples[len(samples)/4:] {
		peakHeap, peakKeys, peakG = max(peakHeap, s.heapInuse), max(peakKeys, s.keys), max(peakG, s.goroutines)
	}
	t.Logf("FIGURES soak %v: %d decisions (%d failed calls), %d leases abandoned; heap in use %.1f MB at start, %.1f MB after warm-up, peak %.1f MB, %.1f MB at the end; peak %d keys; goroutines %d at start, peak %d",
		run, decisions.Load(), failures.Load(), abandoned.Load(),
		mb(first.heapInuse), mb(warm.heapInuse), mb(peakHeap), mb(end.heapInuse), peakKeys, first.goroutines, peakG)
	if failures.Load() != 0 {
		t.Errorf("%d calls failed", failures.Load())
	}
	if decisions.Load() < int64(len(calls)*workers) {
		t.Fatalf("only %d decisions: the soak did not run", decisions.Load())
	}
	if peakKeys == 0 {
		t.Fatal("Redis never held a key during the soak: the key check proves nothing")
	}
	// Level: a leak of even a few hundred bytes per call shows over a long
	// run; the margin covers a GC that left a span half full.
	if limit := warm.heapInuse + warm.heapInuse/2 + 4<<20; end.heapInuse > limit || peakHeap > limit {
		t.Errorf("heap in use grew: %.1f MB after warm-up, peak %.1f MB, %.1f MB at the end", mb(warm.heapInuse), mb(peakHeap), mb(end.heapInuse))
	}
	if limit := first.goroutines + workers + 10; peakG > limit {
		t.Errorf("peak of %d goroutines, more than %d at start + %d workers + 10", peakG, first.goroutines, workers)
	}
	if n, ok := waitGoroutines(first.goroutines, 10*time.Second); !ok {
		t.Errorf("%d goroutines after the soak, %d before", n, first.goroutines)
	}
	// Every state key carries a TTL of at most two periods; Redis reclaims
	// expired keys within about a second more. The refunds' own keys, which
	// make a resent refund count once, are kept for a minute.
	var leftover []string
	if !pollUntil(10*time.Second, func() bool {
		all, err := admin.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		leftover = slices.DeleteFunc(all, func(k string) bool { return strings.Contains(k, refundSuffix) })
		return len(leftover) == 0
	}) {
		t.Errorf("%d keys left 10s after the soak (a key without a TTL?), e.g. %v", len(leftover), leftover[:min(5, len(leftover))])
	}
	refundKeys, err := admin.Keys(ctx, "*"+refundSuffix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range refundKeys {
		if ttl := admin.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Minute {
			t.Fatalf("refund key %s has a TTL of %v, want at most a minute", k, ttl)
		}
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
