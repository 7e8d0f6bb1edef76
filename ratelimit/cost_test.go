package ratelimit

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// memoryUsage sums MEMORY USAGE (all samples) over keys.
func memoryUsage(tb testing.TB, c redis.UniversalClient, keys ...string) int64 {
	tb.Helper()
	var total int64
	for _, k := range keys {
		n, err := c.MemoryUsage(context.Background(), k, 0).Result()
		if err != nil {
			tb.Fatalf("MEMORY USAGE %s: %v", k, err)
		}
		total += n
	}
	return total
}

// TestMemoryPerIdentity measures, on a real server, the Redis memory one
// identity costs under each algorithm (MEMORY USAGE of its keys), and checks
// the bounds the docs promise: the O(1) algorithms use the same memory after
// 500 calls as after 5; the sliding log grows with the entries in its window
// and shrinks back when they expire; leases grow with leases held.
//
//	go test -run TestMemoryPerIdentity -v ./ratelimit
func TestMemoryPerIdentity(t *testing.T) {
	srv := redistestStart(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	var now time.Time
	clock := withClock(func() time.Time { return now })
	for _, alg := range []Algorithm{TokenBucket, SlidingWindow, FixedWindow} {
		now = base
		l := mustNew(t, rdb, PerHour(1_000_000), clock, WithAlgorithm(alg))
		keys := l.scriptKeys(mustKey(t, l, "mem"))
		for range 5 {
			now = now.Add(time.Millisecond)
			_, _ = l.Allow(ctx, "mem")
		}
		few := memoryUsage(t, rdb, keys...)
		for range 495 {
			now = now.Add(time.Millisecond)
			_, _ = l.Allow(ctx, "mem")
		}
		many := memoryUsage(t, rdb, keys...)
		t.Logf("%-14s %d key(s): %d bytes after 5 calls, %d after 500", alg, len(keys), few, many)
		if few == 0 || many > few+16 {
			t.Errorf("%v: memory %d after 5 calls, %d after 500: not O(1)", alg, few, many)
		}
	}

	// The sliding log at a full window, for a small and a large quota (the
	// sorted set switches from a listpack to a skiplist past 128 entries).
	for _, quota := range []int64{100, 1000} {
		now = base
		l := mustNew(t, rdb, Limit{Rate: quota, Per: time.Minute}, clock, WithAlgorithm(SlidingLog), WithNamespace("log"+strconv.FormatInt(quota, 10)))
		keys := l.scriptKeys(mustKey(t, l, "mem"))
		for range quota {
			now = now.Add(time.Millisecond)
			if res, err := l.Allow(ctx, "mem"); err != nil || !res.Allowed {
				t.Fatalf("filling the log: %+v %v", res, err)
			}
		}
		full := memoryUsage(t, rdb, keys...)
		entries := rdb.ZCard(ctx, keys[0]).Val()
		t.Logf("sliding_log    quota %d, full window: %d entries, %d bytes (%.1f per entry)", quota, entries, full, float64(full)/float64(entries))
		if entries != quota {
			t.Errorf("log of quota %d holds %d entries", quota, entries)
		}
		// Denied calls add nothing.
		for range 10 {
			_, _ = l.Allow(ctx, "mem")
		}
		if n := rdb.ZCard(ctx, keys[0]).Val(); n != quota {
			t.Errorf("denied calls grew the log to %d", n)
		}
		// One window later, one call: the log holds only that entry.
		now = now.Add(time.Minute)
		_, _ = l.Allow(ctx, "mem")
		if n := rdb.ZCard(ctx, keys[0]).Val(); n != 1 {
			t.Errorf("after the window passed the log holds %d entries, want 1", n)
		}
	}

	// Leases: the memory grows with the leases held, and is freed with them.
	now = base
	c := mustNewConcurrency(t, rdb, 100, clock)
	key, _ := c.Key("mem")
	var leases []*Lease
	for range 10 {
		lease, _, err := c.Acquire(ctx, "mem", 1)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, lease)
	}
	held := memoryUsage(t, rdb, key, key+metaSuffix)
	t.Logf("concurrency    10 leases held: %d bytes", held)
	for _, l := range leases {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := rdb.Exists(ctx, key, key+metaSuffix).Val(); n != 0 {
		t.Errorf("%d lease keys left after releasing every lease", n)
	}

	m := mustNewMulti(t, rdb, []Quota{{Name: "s", Limit: PerSecond(10)}, {Name: "d", Limit: PerDay(10000), Algorithm: FixedWindow}}, clock)
	_, _ = m.Allow(ctx, "mem")
	mkeys, _ := m.Keys("mem")
	t.Logf("multi          2 quotas: %d bytes", memoryUsage(t, rdb, mkeys...))
}

// commandUsec returns usec_per_call of one command from INFO commandstats.
func commandUsec(tb testing.TB, c redis.UniversalClient, cmd string) (usec float64, calls int64) {
	tb.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "cmdstat_"+cmd {
			continue
		}
		for _, kv := range strings.Split(stats, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "usec_per_call":
				usec, _ = strconv.ParseFloat(v, 64)
			case "calls":
				calls, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return usec, calls
}

// decisionUsec is commandUsec of the calls that run decisions: FCALL of the
// functions library, and EVALSHA (the other scripts, and decisions on a
// server without functions), together.
func decisionUsec(tb testing.TB, c redis.UniversalClient) (usec float64, calls int64) {
	tb.Helper()
	fu, fn := commandUsec(tb, c, "fcall")
	eu, en := commandUsec(tb, c, "evalsha")
	if fn+en == 0 {
		return 0, 0
	}
	return (fu*float64(fn) + eu*float64(en)) / float64(fn+en), fn + en
}

// BenchmarkAlgorithms measures one decision of each algorithm on a real
// redis-server, and reports the script's own cost inside Redis
// (usec_per_call of EVALSHA from INFO commandstats, reset before the loop)
// as redis-µs/call. Identities rotate over 1000; limits are high, so calls
// are allowed and write (the costlier path).
//
//	go test -run X -bench BenchmarkAlgorithms -count 5 ./ratelimit
func BenchmarkAlgorithms(b *testing.B) {
	srv := redistestStartB(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	run := func(b *testing.B, decide func(id string) error) {
		// Load the script (NOSCRIPT then EVAL) before counting.
		if err := decide(ids[0]); err != nil {
			b.Fatal(err)
		}
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := decide(ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		usec, calls := decisionUsec(b, c)
		if calls == 0 {
			b.Fatal("no FCALL or EVALSHA counted")
		}
		b.ReportMetric(usec, "redis-µs/call")
	}
	for _, alg := range limiterAlgorithms {
		b.Run(alg.String(), func(b *testing.B) {
			// Start empty in every -count round: the sliding log's entries
			// live 1 s here, so it holds a few entries per identity.
			if err := c.FlushAll(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			l := mustNew(b, c, PerSecond(1_000_000), WithAlgorithm(alg), WithNamespace("bench"), WithTimeout(5*time.Second))
			run(b, func(id string) error { _, err := l.Allow(ctx, id); return err })
		})
	}
	b.Run("sliding_log_100_entries", func(b *testing.B) {
		// A script clock moving 1 ms a call and a window of 100 s keep
		// each of the 1000 identities' logs at 100 entries: every call
		// expires one entry and adds one. (The keys' TTLs, on real time,
		// are then 100 s: long enough not to expire during the run.)
		if err := c.FlushAll(ctx).Err(); err != nil { // -count reruns on the same server
			b.Fatal(err)
		}
		var tick atomic.Int64
		clock := withClock(func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Millisecond) })
		l := mustNew(b, c, Limit{Rate: 1_000_000, Per: 100 * time.Second}, clock, WithAlgorithm(SlidingLog), WithNamespace("bench-full"), WithTimeout(5*time.Second))
		for i := range 100 * len(ids) {
			if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
		}
		run(b, func(id string) error { _, err := l.Allow(ctx, id); return err })
		if n := c.ZCard(ctx, mustKeyB(b, l, ids[0])).Val(); n < 99 || n > 101 {
			b.Fatalf("log of %d entries, want 100", n)
		}
	})
	b.Run("concurrency_acquire_release", func(b *testing.B) {
		cl := mustNewConcurrency(b, c, 1_000_000, WithNamespace("bench"), WithTimeout(5*time.Second))
		run(b, func(id string) error {
			lease, _, err := cl.Acquire(ctx, id, 1)
			if err != nil {
				return err
			}
			return lease.Release(ctx)
		})
	})
	b.Run("multi_2_quotas", func(b *testing.B) {
		m := mustNewMulti(b, c, []Quota{
			{Name: "s", Limit: PerSecond(1_000_000)},
			{Name: "d", Limit: PerDay(1_000_000_000), Algorithm: FixedWindow},
		}, WithNamespace("bench"), WithTimeout(5*time.Second))
		run(b, func(id string) error { _, err := m.Allow(ctx, id); return err })
	})
}

func mustKeyB(b *testing.B, l *Limiter, id string) string {
	b.Helper()
	k, err := l.Key(id)
	if err != nil {
		b.Fatal(err)
	}
	return k
}
