package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// TestCluster runs every algorithm, the concurrency leases and the
// multi-limit call on a real 3-master Redis Cluster through a go-redis
// ClusterClient (one cluster for the whole test, to keep CI fast). Redis
// Cluster rejects a script whose keys span slots (CROSSSLOT), so each call
// succeeding proves the keys of one identity share a slot; the test also
// checks it directly, and that identities spread over all three masters.
func TestCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	ctx := context.Background()
	const identities = 200
	// The script clock is frozen so that no window edge can fall between
	// two calls; routing, not time, is under test here.
	frozen := withClock(func() time.Time { return base })
	id := func(i int) string { return "user:" + strconv.Itoa(i) }

	// sameSlot fails unless every key lies in one slot, the slot of the
	// identity's hash tag alone.
	sameSlot := func(t *testing.T, keys ...string) {
		t.Helper()
		tag := keys[0][strings.IndexByte(keys[0], '{') : strings.IndexByte(keys[0], '}')+1]
		want, err := cluster.Slot(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got, err := cluster.Slot(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("key %s is in slot %d, its hash tag %s in %d", k, got, tag, want)
			}
		}
	}
	noBackendError := func(t *testing.T, what string, err error) {
		t.Helper()
		var be *BackendError
		if errors.As(err, &be) {
			t.Fatalf("%s: backend error %v (code %q)", what, err, be.Code)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	for _, alg := range limiterAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			l := mustNew(t, cc, PerMinute(2), frozen, WithAlgorithm(alg), WithNamespace("cl"), WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
			var first Result
			for i := range identities {
				res, err := l.AllowN(ctx, id(i), 2)
				noBackendError(t, "AllowN", err)
				if !res.Allowed || res.Reason != ReasonQuota {
					t.Fatalf("%s: first call %+v", id(i), res)
				}
				if i == 0 {
					first = res
				}
				res, err = l.Allow(ctx, id(i))
				noBackendError(t, "Allow", err)
				if res.Allowed {
					t.Fatalf("%s: second call allowed over the limit", id(i))
				}
			}
			_, err := l.Refund(ctx, id(0), first, 1)
			noBackendError(t, "Refund", err)
			if res, err := l.Peek(ctx, id(0)); err != nil || !res.Allowed {
				t.Fatalf("Peek after refund: %+v %v", res, err)
			}
			noBackendError(t, "Reset", l.Reset(ctx, id(1)))
			sameSlot(t, l.scriptKeys(mustKey(t, l, id(0)))...)
		})
	}

	t.Run("concurrency", func(t *testing.T) {
		c := mustNewConcurrency(t, cc, 2, frozen, WithNamespace("cl"), WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
		for i := range identities {
			lease, res, err := c.Acquire(ctx, id(i), 2)
			noBackendError(t, "Acquire", err)
			if !res.Allowed || !lease.Tracked() {
				t.Fatalf("%s: %+v", id(i), res)
			}
			if _, res, _ := c.Acquire(ctx, id(i), 1); res.Allowed {
				t.Fatalf("%s: lease over max", id(i))
			}
			noBackendError(t, "Extend", lease.Extend(ctx))
			if i%2 == 0 { // keep half the leases, to count their keys below
				noBackendError(t, "Release", lease.Release(ctx))
			}
		}
		key, _ := c.Key(id(1))
		sameSlot(t, key, key+metaSuffix)
	})

	t.Run("multi", func(t *testing.T) {
		m := mustNewMulti(t, cc, []Quota{
			{Name: "burst", Limit: PerMinute(5)},
			{Name: "minute", Limit: PerMinute(100), Algorithm: SlidingWindow},
			{Name: "tokens", Limit: PerHour(1000), Algorithm: FixedWindow},
		}, frozen, WithNamespace("cl"), WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
		var first MultiResult
		for i := range identities {
			res, err := m.AllowCosts(ctx, id(i), 1, 1, 1000)
			noBackendError(t, "AllowCosts", err)
			if !res.Allowed {
				t.Fatalf("%s: %+v", id(i), res)
			}
			if i == 0 {
				first = res
			}
			res, err = m.AllowCosts(ctx, id(i), 1, 1, 1)
			noBackendError(t, "AllowCosts", err)
			if res.Allowed || res.Quota != "tokens" || res.Quotas[0].Remaining != 4 {
				t.Fatalf("%s: the token quota did not deny all or nothing: %+v", id(i), res)
			}
		}
		// The refund's own key is in the identity's slot too, or the
		// script would fail with CROSSSLOT on the cluster.
		refunded, err := m.Refund(ctx, id(0), first, 0, 0, 10)
		noBackendError(t, "Refund", err)
		if refunded.Quotas[2].Remaining != 10 {
			t.Fatalf("after the refund: %+v, want 10 tokens back", refunded)
		}
		keys, _ := m.Keys(id(0))
		sameSlot(t, keys...)
		noBackendError(t, "Reset", m.Reset(ctx, id(1)))
	})

	t.Run("exact under contention", func(t *testing.T) {
		var calls []func(context.Context) (Result, error)
		for range 2 {
			c2 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = c2.Close() })
			m := mustNewMulti(t, c2, []Quota{{Name: "a", Limit: PerHour(100)}, {Name: "b", Limit: PerHour(150), Algorithm: FixedWindow}},
				frozen, WithNamespace("clx"), WithFailStrategy(FailClosed), WithTimeout(5*time.Second))
			calls = append(calls, func(ctx context.Context) (Result, error) {
				res, err := m.Allow(ctx, "hot")
				return res.Result, err
			})
		}
		allowed, denied, failed := hammer(calls, 10, time.Now().Add(time.Second))
		if failed != 0 || allowed != 100 || denied == 0 {
			t.Fatalf("allowed %d of 100 (denied %d, failed %d)", allowed, denied, failed)
		}
	})

	// The negative control: keys of two hash tags in one script are
	// rejected by the cluster, so the calls above passing means something.
	t.Run("crossslot control", func(t *testing.T) {
		var slots [2]int64
		keys := []string{"ctl:{a}", "ctl:{b}"}
		for i, k := range keys {
			slots[i], _ = cluster.Slot(ctx, k)
		}
		if slots[0] == slots[1] {
			t.Fatalf("control keys share slot %d", slots[0])
		}
		args := []any{2, 1, 0, 0, 1, 6000000, 10, 1, 0, 1, 6000000, 10, 1}
		err := multiScript.Run(ctx, cc, keys, args...).Err()
		if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
			t.Fatalf("a script over two slots: %v, want CROSSSLOT", err)
		}
	})

	// Identities spread over every master: no hot slot, no hot node.
	sizes, err := cluster.DBSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	t.Logf("keys per master: %v (total %d)", sizes, total)
	for i, n := range sizes {
		if n*5 < total { // under 20% of the keys, where 33% is expected
			t.Fatalf("master %d holds %d of %d keys: identities do not spread", i, n, total)
		}
	}
}
