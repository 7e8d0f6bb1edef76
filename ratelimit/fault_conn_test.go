package ratelimit

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis that restarts, loses its script cache, or has its connections
// killed.

// TestRestartEveryAlgorithm kills Redis and starts it again on the same port,
// empty (no persistence), for every kind: while it is down the fail strategy
// decides with a connection or timeout error, returned and published; after
// the restart the same limiters decide from Redis again, the scripts having
// been reloaded through the NOSCRIPT fallback and the functions library
// through "Function not found", and the state is gone (a full quota
// again).
func TestRestartEveryAlgorithm(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	kinds, rec := faultKindsBoth(t, c, WithTimeout(time.Second))
	for _, k := range kinds {
		for i := range faultQuota + 1 {
			res, err := k.call(ctx, "u")
			if err != nil || res.Allowed != (i < faultQuota) || res.Reason != ReasonQuota {
				t.Fatalf("%s/%v call %d before the outage: %+v %v", k.name, k.fail, i, res, err)
			}
		}
	}
	srv.Stop()
	before := len(rec.all())
	// Concurrently: go-redis retries a refused dial until the timeout.
	var wg sync.WaitGroup
	for _, k := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := k.call(ctx, "u")
			if msg := k.checkFailed(res, err, ErrorConnection, ErrorTimeout); msg != "" {
				t.Errorf("Redis down: %s", msg)
			}
		}()
	}
	wg.Wait()
	events := rec.all()[before:]
	if len(events) != len(kinds) {
		t.Errorf("%d events for %d calls while down", len(events), len(kinds))
	}
	checkEvents(t, events, kinds, ErrorConnection, ErrorTimeout)

	srv.Restart()
	admin := srv.Client(t)
	var hashes []string
	for _, k := range kinds[:len(kinds)/2] {
		for _, s := range k.scripts {
			hashes = append(hashes, s.Hash())
		}
	}
	if cached, err := admin.ScriptExists(ctx, hashes...).Result(); err != nil || slices.Contains(cached, true) {
		t.Fatalf("script cache after the restart: %v %v, want empty", cached, err)
	}
	if libraryLoaded(t, admin) {
		t.Fatal("the functions library survived the restart")
	}
	for i, res := range recoverKinds(t, kinds, "u") {
		if !res.Allowed || res.Remaining != faultQuota-1 {
			t.Errorf("%s/%v after the restart: %+v, want a fresh quota (the state was lost)", kinds[i].name, kinds[i].fail, res)
		}
	}
	if cached, err := admin.ScriptExists(ctx, hashes...).Result(); err != nil || slices.Contains(cached, false) {
		t.Fatalf("scripts not reloaded after the restart: %v %v", cached, err)
	}
	if !libraryLoaded(t, admin) {
		t.Fatal("the functions library was not loaded again after the restart")
	}
}

// TestScriptFlushEveryAlgorithm empties the script cache under every kind:
// the next call reloads its script (EVALSHA, NOSCRIPT, EVAL) and is decided
// by Redis on the state it had, without an error or a failed event.
func TestScriptFlushEveryAlgorithm(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	rec := &recorder{}
	kinds := faultKinds(t, c, "flush", FailClosed, WithSubscribers(rec))
	for _, k := range kinds {
		if _, err := k.call(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		res, err := k.call(ctx, "u")
		if err != nil || !res.Allowed || res.Reason != ReasonQuota || res.Remaining != faultQuota-2 {
			t.Errorf("%s after SCRIPT FLUSH: %+v %v, want the second call of the quota", k.name, res, err)
		}
	}
	for _, e := range rec.all() {
		if e.Err != nil {
			t.Errorf("%s: a reload published an error: %v", e.Namespace, e.Err)
		}
	}
}

// limiterConns returns the ids of the connections named name (CLIENT LIST)
// and the last command of each, marked "+blocked" while Redis holds it.
func limiterConns(t *testing.T, admin *redis.Client, name string) (ids []string, cmds []string) {
	t.Helper()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	for _, line := range strings.Split(list, "\n") {
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		if f["name"] == name {
			ids = append(ids, f["id"])
			cmd := f["cmd"]
			if strings.Contains(f["flags"], "b") {
				cmd += "+blocked" // held, by CLIENT PAUSE here
			}
			cmds = append(cmds, cmd)
		}
	}
	return ids, cmds
}

func killConns(t *testing.T, admin *redis.Client, ids []string) {
	t.Helper()
	for _, id := range ids {
		if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %s: %v", id, err)
		}
	}
}

// TestClientKill kills the limiter's connections with CLIENT KILL. Idle
// connections: go-redis finds them dead when it takes them from the pool and
// dials new ones, so the next calls are decided by Redis with no error, even
// with retries off. In-flight calls (held by CLIENT PAUSE WRITE, which holds
// scripts but not CLIENT KILL): with retries off each fails at once with a
// connection error, decided by the fail strategy and published, and nothing
// was spent, since Redis never ran the script.
func TestClientKill(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	const name, pool = "rl-under-test", 16
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, ClientName: name, PoolSize: pool, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	kinds, rec := faultKindsBoth(t, c, WithTimeout(2*time.Second))
	parallel := func(id func(i int) string) ([]Result, []error) {
		res := make([]Result, len(kinds))
		errs := make([]error, len(kinds))
		var wg sync.WaitGroup
		for i, k := range kinds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = k.call(ctx, id(i))
			}()
		}
		wg.Wait()
		return res, errs
	}

	t.Run("idle", func(t *testing.T) {
		parallel(func(int) string { return "warm" }) // fill the pool
		ids, _ := limiterConns(t, admin, name)
		if len(ids) < 2 {
			t.Fatalf("%d pooled connections named %s, want several", len(ids), name)
		}
		killConns(t, admin, ids)
		if !pollUntil(5*time.Second, func() bool {
			left, _ := limiterConns(t, admin, name)
			return len(left) == 0
		}) {
			t.Fatal("killed connections still listed")
		}
		before := len(rec.all())
		res, errs := parallel(func(int) string { return "idle" })
		for i, k := range kinds {
			if errs[i] != nil || !res[i].Allowed || res[i].Reason != ReasonQuota {
				t.Errorf("%s/%v after its idle connections were killed: %+v %v", k.name, k.fail, res[i], errs[i])
			}
		}
		for _, e := range rec.all()[before:] {
			if e.Err != nil {
				t.Errorf("%s: published %v", e.Namespace, e.Err)
			}
		}
	})

	t.Run("in_flight", func(t *testing.T) {
		if err := admin.Do(ctx, "CLIENT", "PAUSE", 5000, "WRITE").Err(); err != nil {
			t.Fatal(err)
		}
		defer admin.Do(ctx, "CLIENT", "UNPAUSE")
		before := len(rec.all())
		done := make(chan struct{})
		var res []Result
		var errs []error
		go func() {
			defer close(done)
			res, errs = parallel(func(int) string { return "in-flight" })
		}()
		// Wait until every call is held inside Redis (an idle connection
		// also shows its last command, fcall or evalsha: only the blocked flag tells
		// a held call), then kill them all.
		var ids []string
		if !pollUntil(3*time.Second, func() bool {
			var cmds []string
			ids, cmds = limiterConns(t, admin, name)
			held := 0
			for _, cmd := range cmds {
				if cmd == "fcall+blocked" || cmd == "evalsha+blocked" {
					held++
				}
			}
			return held == min(len(kinds), pool)
		}) {
			t.Fatalf("calls not held by CLIENT PAUSE WRITE: connections %v", ids)
		}
		killConns(t, admin, ids)
		<-done
		if err := admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
			t.Fatal(err)
		}
		failed := 0
		for i, k := range kinds {
			if errs[i] == nil {
				continue // it was still waiting for a connection: decided by Redis after the kill
			}
			failed++
			if msg := k.checkFailed(res[i], errs[i], ErrorConnection); msg != "" {
				t.Errorf("killed in flight: %s", msg)
			}
		}
		if failed < min(len(kinds), pool) {
			t.Errorf("%d calls failed, want at least the %d held", failed, min(len(kinds), pool))
		}
		var failedEvents []Event
		for _, e := range rec.all()[before:] {
			if e.Err != nil {
				failedEvents = append(failedEvents, e)
			}
		}
		if len(failedEvents) != failed {
			t.Errorf("%d failed events for %d failed calls", len(failedEvents), failed)
		}
		checkEvents(t, failedEvents, kinds, ErrorConnection)
		// Redis never ran the killed calls: nothing was spent.
		for i, k := range kinds {
			if errs[i] == nil {
				continue
			}
			peek, err := k.peek(ctx, "in-flight")
			if err != nil || peek.Remaining != faultQuota {
				t.Errorf("%s/%v: a killed call was spent: %+v %v", k.name, k.fail, peek, err)
			}
		}
	})
}
