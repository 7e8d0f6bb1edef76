package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis that answers with an error: out of memory, a foreign value at a
// key, a script that never ends.

// fillMemory sets maxmemory a little above what Redis uses, with
// noeviction, and writes filler keys until Redis refuses with OOM.
func fillMemory(t *testing.T, admin *redis.Client) {
	t.Helper()
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	info, err := admin.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if used == 0 {
		t.Fatalf("no used_memory in INFO memory")
	}
	if err := admin.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used+1<<20, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	filler := strings.Repeat("x", 64<<10)
	for i := range 1000 {
		err := admin.Set(ctx, "filler:"+strconv.Itoa(i), filler, 0).Err()
		if err != nil {
			if !strings.HasPrefix(err.Error(), "OOM") {
				t.Fatalf("filling memory: %v", err)
			}
			return
		}
	}
	t.Fatal("Redis took 64 MB past a 1 MB margin without OOM")
}

// limiterState returns the content of every key of the fault namespaces (not
// the filler).
func limiterState(t *testing.T, c *redis.Client) map[string]string {
	t.Helper()
	all := snapshot(t, c)
	for k := range all {
		if strings.HasPrefix(k, "filler:") {
			delete(all, k)
		}
	}
	return all
}

// TestOutOfMemory fills Redis to maxmemory with the noeviction policy: a
// decision that must write fails with an OOM error reply (Type script, Code
// "OOM"), decided by the fail strategy and published, and writes nothing;
// what only reads or deletes still works (Peek, Reset, releasing a lease);
// once memory is freed, decisions come from Redis again.
func TestOutOfMemory(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	kinds, rec := faultKindsBoth(t, admin, WithTimeout(2*time.Second))
	for _, k := range kinds {
		if _, err := k.call(ctx, "existing"); err != nil {
			t.Fatal(err)
		}
	}
	conc := mustNewConcurrency(t, admin, 2, WithNamespace("oom-lease"), WithTimeout(2*time.Second))
	lease, _, err := conc.Acquire(ctx, "holder", 1)
	if err != nil || lease == nil {
		t.Fatalf("Acquire: %v", err)
	}
	tb := mustNew(t, admin, PerMinute(faultQuota), WithNamespace("oom-reset"), WithTimeout(2*time.Second))
	if _, err := tb.Allow(ctx, "to-reset"); err != nil {
		t.Fatal(err)
	}

	fillMemory(t, admin)
	state := limiterState(t, admin)
	before := len(rec.all())
	for _, k := range kinds {
		for _, id := range []string{"existing", "new"} {
			res, err := k.call(ctx, id)
			if msg := k.checkFailed(res, err, ErrorScript); msg != "" {
				t.Errorf("OOM, identity %s: %s", id, msg)
				continue
			}
			var be *BackendError
			if errors.As(err, &be); be.Code != "OOM" {
				t.Errorf("%s/%v: code %q (%v), want OOM", k.name, k.fail, be.Code, err)
			}
		}
		if res, err := k.peek(ctx, "existing"); err != nil || res.Reason != ReasonQuota || res.Remaining != faultQuota-1 {
			t.Errorf("%s: Peek under OOM: %+v %v", k.name, res, err)
		}
	}
	events := rec.all()[before:]
	if len(events) != 2*len(kinds) {
		t.Errorf("%d events for %d calls", len(events), 2*len(kinds))
	}
	checkEvents(t, events, kinds, ErrorScript)
	if after := limiterState(t, admin); !equalMaps(state, after) {
		t.Errorf("calls refused with OOM changed the state:\nbefore %v\nafter  %v", state, after)
	}
	if err := lease.Release(ctx); err != nil {
		t.Errorf("Release under OOM: %v", err)
	}
	if err := tb.Reset(ctx, "to-reset"); err != nil {
		t.Errorf("Reset under OOM: %v", err)
	}
	if res, err := conc.Peek(ctx, "holder"); err != nil || res.Remaining != 2 {
		t.Errorf("the lease released under OOM still holds capacity: %+v %v", res, err)
	}

	if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for i, res := range recoverKinds(t, kinds, "new") {
		if !res.Allowed || res.Remaining != faultQuota-1 {
			t.Errorf("%s/%v after memory was freed: %+v", kinds[i].name, kinds[i].fail, res)
		}
	}
}

// checkScriptErrors calls every kind once for identity id and checks that
// each call was decided by its fail strategy because Redis answered with
// an error reply of the given code (Type script), and that each published
// one Event saying so.
func checkScriptErrors(t *testing.T, rec *recorder, kinds []faultKind, id, code string) {
	t.Helper()
	ctx := context.Background()
	before := len(rec.all())
	for _, k := range kinds {
		res, err := k.call(ctx, id)
		if msg := k.checkFailed(res, err, ErrorScript); msg != "" {
			t.Errorf("%s: %s", code, msg)
			continue
		}
		if be := (*BackendError)(nil); errors.As(err, &be) && be.Code != code {
			t.Errorf("%s/%v: code %q (%v), want %s", k.name, k.fail, be.Code, err, code)
		}
	}
	events := rec.all()[before:]
	if len(events) != len(kinds) {
		t.Errorf("%d events for %d calls", len(events), len(kinds))
	}
	checkEvents(t, events, kinds, ErrorScript)
}

// TestWrongTypeKey puts a list, a type no script uses, where each
// algorithm keeps an identity's state (as another program sharing the
// namespace might): the decision fails with Redis's WRONGTYPE error reply
// (Type script), decided by the fail strategy and published, and the list
// is left as it was. Once the key is deleted, Redis decides again. A key's
// name always carries its algorithm, so the library itself never makes one
// algorithm read another's state.
func TestWrongTypeKey(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	kinds, rec := faultKindsBoth(t, admin, WithTimeout(2*time.Second))
	for _, k := range kinds {
		if _, err := k.call(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	keys := admin.Keys(ctx, "*").Val()
	if len(keys) < len(kinds) {
		t.Fatalf("%d keys for %d kinds: %v", len(keys), len(kinds), keys)
	}
	for _, key := range keys {
		if err := admin.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.RPush(ctx, key, "not", "a", "limiter").Err(); err != nil {
			t.Fatal(err)
		}
	}
	state := snapshot(t, admin)

	checkScriptErrors(t, rec, kinds, "u", "WRONGTYPE")
	if after := snapshot(t, admin); !equalMaps(state, after) {
		t.Errorf("calls refused with WRONGTYPE changed what Redis holds:\nbefore %v\nafter  %v", state, after)
	}

	if err := admin.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	for i, res := range recoverKinds(t, kinds, "u") {
		if !res.Allowed || res.Remaining != faultQuota-1 {
			t.Errorf("%s/%v once the list was deleted: %+v", kinds[i].name, kinds[i].fail, res)
		}
	}
}

// TestBusyScript runs a script that never ends from another client on a
// Redis whose busy-reply-threshold is 100 ms: past it, Redis answers every
// other command with BUSY, so each decision fails at once with an error
// reply (Type script, Code "BUSY"; go-redis does not retry it), decided by
// the fail strategy and published. After SCRIPT KILL, decisions come from
// Redis again.
func TestBusyScript(t *testing.T) {
	srv := redistestStart(t, "--busy-reply-threshold", "100")
	admin := srv.Client(t)
	ctx := context.Background()
	// A timeout well past the threshold: the calls must end on BUSY, not on
	// the timeout.
	kinds, rec := faultKindsBoth(t, admin, WithTimeout(2*time.Second))
	for _, k := range kinds {
		if _, err := k.call(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}

	// The runaway script's own client waits for as long as it runs.
	runaway := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: -1, MaxRetries: -1})
	t.Cleanup(func() { _ = runaway.Close() })
	runawayErr := make(chan error, 1)
	go func() {
		runawayErr <- runaway.Eval(context.Background(), "local i = 0 while true do i = i + 1 end", nil).Err()
	}()
	killed := false
	defer func() {
		if !killed {
			_ = admin.ScriptKill(ctx).Err()
			<-runawayErr
		}
	}()
	if !pollUntil(5*time.Second, func() bool {
		err := admin.Ping(ctx).Err()
		return err != nil && strings.HasPrefix(err.Error(), "BUSY")
	}) {
		t.Fatal("Redis never answered BUSY")
	}

	checkScriptErrors(t, rec, kinds, "u", "BUSY")

	if err := admin.ScriptKill(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT KILL: %v", err)
	}
	killed = true
	if err := <-runawayErr; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the runaway script ended with %v, want killed", err)
	}
	for i, res := range recoverKinds(t, kinds, "u") {
		if !res.Allowed || res.Remaining != faultQuota-2 {
			t.Errorf("%s/%v after SCRIPT KILL: %+v, want the second call of the quota", kinds[i].name, kinds[i].fail, res)
		}
	}
}
