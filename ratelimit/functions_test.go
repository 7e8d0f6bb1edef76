package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// libraryName returns the name of the functions library, from its
// "#!lua name=..." line.
func libraryName() string {
	first, _, _ := strings.Cut(lua.Library(), "\n")
	return strings.TrimPrefix(first, "#!lua name=")
}

// libraryLoaded reports whether c's node holds the functions library.
func libraryLoaded(t testing.TB, c redis.Cmdable) bool {
	t.Helper()
	libs, err := c.FunctionList(context.Background(), redis.FunctionListQuery{LibraryNamePattern: libraryName()}).Result()
	if err != nil {
		t.Fatalf("FUNCTION LIST: %v", err)
	}
	return len(libs) == 1
}

// commandStats returns the fields of INFO commandstats for cmd (calls,
// rejected_calls, failed_calls...), all zero if cmd never ran.
func commandStats(t testing.TB, c redis.Cmdable, cmd string) map[string]float64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "cmdstat_"+cmd {
			continue
		}
		for _, kv := range strings.Split(stats, ",") {
			k, v, _ := strings.Cut(kv, "=")
			out[k], _ = strconv.ParseFloat(v, 64)
		}
	}
	return out
}

// spendAll runs cost-1 decisions for ids, one at a time and then as one
// BatchAllow, and checks that the i-th decision of every identity is
// allowed with quota-i left: state kept, every decision made once.
func spendAll(t *testing.T, l *Limiter, quota int64, round int64, ids []string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		res, err := l.Allow(ctx, id)
		if err != nil || !res.Allowed || res.Remaining != quota-round {
			t.Fatalf("round %d, %s alone: %+v %v, want allowed with %d left", round, id, res, err, quota-round)
		}
	}
	reqs := make([]Request, len(ids))
	for i, id := range ids {
		reqs[i] = Request{Identity: id, Cost: 1}
	}
	results, err := l.BatchAllow(ctx, reqs)
	if err != nil {
		t.Fatalf("round %d, batch: %v", round, err)
	}
	for i, res := range results {
		if !res.Allowed || res.Remaining != quota-round-1 {
			t.Fatalf("round %d, %s in a batch: %+v, want allowed with %d left", round, ids[i], res, quota-round-1)
		}
	}
}

func identities(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	return ids
}

// TestFunctionsUsed: on Redis 7 decisions go as FCALL of the library,
// alone and in batches, with pipelining on and off: INFO commandstats
// counts FCALLs and no EVALSHA or EVAL.
func TestFunctionsUsed(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			l := mustNew(t, c, PerMinute(10), WithPipelining(pipelining), WithNamespace(fmt.Sprint("used-", pipelining)))
			ids := identities(20)
			spendAll(t, l, 10, 1, ids)
			fcall := commandStats(t, c, "fcall")
			if fcall["calls"] < float64(len(ids)+1) {
				t.Errorf("FCALL: %v, want at least %d calls", fcall, len(ids)+1)
			}
			for _, cmd := range []string{"evalsha", "eval"} {
				if st := commandStats(t, c, cmd); st["calls"] != 0 || st["rejected_calls"] != 0 {
					t.Errorf("%s: %v, want none", cmd, st)
				}
			}
			if l.e.scriptsOnly.Load() {
				t.Error("the engine fell back to scripts on Redis 7")
			}
		})
	}
}

// TestFunctionFlush empties the functions of Redis (as a restart without
// persistence or a new master does) between decisions, alone and batched:
// the next call loads the library again and is decided on the state
// Redis had, without an error or a failed event. SCRIPT FLUSH changes
// nothing for decisions.
func TestFunctionFlush(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	admin := srv.Client(t)
	ctx := context.Background()
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			rec := &recorder{}
			l := mustNew(t, c, PerMinute(10), WithPipelining(pipelining), WithNamespace(fmt.Sprint("flush-", pipelining)), WithSubscribers(rec))
			ids := identities(8)
			for round := int64(1); round < 9; round += 2 {
				if round%4 == 1 {
					if err := admin.FunctionFlush(ctx).Err(); err != nil {
						t.Fatal(err)
					}
				} else if err := admin.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				spendAll(t, l, 10, round, ids)
				if !libraryLoaded(t, admin) {
					t.Fatalf("round %d: the library was not loaded again", round)
				}
			}
			for _, e := range rec.all() {
				if e.Err != nil {
					t.Errorf("a reload published an error: %v", e.Err)
				}
			}
			if st := commandStats(t, admin, "evalsha"); st["calls"] != 0 {
				t.Errorf("EVALSHA ran %v times: a flush sent decisions to the scripts", st["calls"])
			}
		})
	}
}

// TestPipelineFunctionFlushMidPipeline runs a pipeline of FCALLs in which
// Redis loses its functions half way (FUNCTION FLUSH inserted between the
// calls): the calls before it succeed; those after it fail with "Function
// not found" and are sent again once the library is loaded, and only they.
// Every identity is spent exactly once.
func TestPipelineFunctionFlushMidPipeline(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	hook := &pipelineHook{}
	c.AddHook(hook)
	l := mustNew(t, c, PerMinute(10), WithTimeout(5*time.Second))
	ctx := context.Background()
	if _, err := l.Allow(ctx, "warm-up"); err != nil { // the library is loaded
		t.Fatal(err)
	}
	hook.reset()
	var flush *redis.StringCmd
	hook.edit = func(cmds []redis.Cmder) []redis.Cmder {
		flush = redis.NewStringCmd(ctx, "function", "flush")
		out := append([]redis.Cmder{}, cmds[:5]...)
		out = append(out, flush)
		return append(out, cmds[5:]...)
	}
	const n = 10
	var calls []*scriptCall
	var keys []string
	for i := range n {
		key, _ := l.Key("id-" + strconv.Itoa(i))
		keys = append(keys, key)
		calls = append(calls, &scriptCall{script: decideScript,
			cmd: newDecideCmd(ctx, []*decision{l.decision(key, 0, 3, modeSpend, nil)}, true)})
	}
	l.e.pipelined(ctx, calls)
	if flush == nil || flush.Err() != nil {
		t.Fatalf("FUNCTION FLUSH was not run inside the pipeline: %v", flush)
	}
	for i, call := range calls {
		if call.err != nil {
			t.Fatalf("call %d: %v", i, call.err)
		}
		d := &decision{}
		copy(d.reply[:], call.reply)
		res, err := l.result(d)
		if len(call.reply) != 5 || err != nil || !res.Allowed || res.Remaining != 7 {
			t.Errorf("call %d: %+v %v, want allowed with 7 remaining", i, res, err)
		}
		if name := call.cmd.Name(); name != "fcall" {
			t.Errorf("call %d ended as %s, want fcall", i, name)
		}
	}
	hook.mu.Lock()
	sizes := append([]int(nil), hook.sizes...)
	hook.mu.Unlock()
	// The pipeline (n calls + the flush), then the n-5 that failed; the
	// FUNCTION LOAD in between is not a script call.
	if len(sizes) != 2 || sizes[0] != n+1 || sizes[1] != n-5 {
		t.Errorf("pipelines of %v, want [%d %d]: only the failed calls are sent again", sizes, n+1, n-5)
	}
	for i, key := range keys {
		state, err := c.Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		lvl, _, per, _, err := tokenBucketState(state)
		if err != nil || per == 0 {
			t.Fatalf("bucket state %q: %v", state, err)
		}
		if lvl/per != 7 {
			t.Errorf("identity %d holds %d tokens, want 7 (spent exactly once)", i, lvl/per)
		}
	}
	if !libraryLoaded(t, c) || l.e.scriptsOnly.Load() {
		t.Errorf("library loaded %v, scripts only %v: want the library, and FCALL", libraryLoaded(t, c), l.e.scriptsOnly.Load())
	}
}

// TestFunctionsACL runs decisions as ACL users that may not run functions:
// without FCALL (the least privilege of scripts alone), and with FCALL but
// without FUNCTION LOAD. Each is decided correctly through EVALSHA, and
// the engine tries FCALL once only. With FCALL alone and a library an
// administrator loaded, decisions go as FCALL; with FCALL and FUNCTION
// LOAD the library is loaded on demand.
func TestFunctionsACL(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	const scriptsOnly = "-@all +evalsha +eval +del +time +get +set +hmget +hset +pexpire +hello +ping"
	decide := func(t *testing.T, c *redis.Client, ns string) *Limiter {
		t.Helper()
		l := mustNew(t, c, PerMinute(3), WithNamespace("acl"), WithFailStrategy(FailClosed))
		for i, want := range []bool{true, true, true, false} {
			res, err := l.Allow(ctx, "user:"+ns)
			if err != nil || res.Allowed != want || res.Reason != ReasonQuota {
				t.Fatalf("call %d: %+v %v", i, res, err)
			}
		}
		return l
	}
	reset := func(t *testing.T) {
		t.Helper()
		if err := admin.FunctionFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	calls := func(cmd string) float64 {
		st := commandStats(t, admin, cmd)
		return st["calls"] + st["rejected_calls"]
	}

	t.Run("no_fcall", func(t *testing.T) {
		reset(t)
		l := decide(t, aclClient(t, srv, "no-fcall", scriptsOnly), "a")
		if !l.e.scriptsOnly.Load() {
			t.Error("the engine still tries FCALL after NOPERM")
		}
		if n := calls("fcall"); n != 1 {
			t.Errorf("%v FCALLs, want the one that found out", n)
		}
		if libraryLoaded(t, admin) {
			t.Error("the library was loaded")
		}
	})
	t.Run("no_function_load", func(t *testing.T) {
		reset(t)
		l := decide(t, aclClient(t, srv, "no-load", scriptsOnly+" +fcall"), "b")
		if !l.e.scriptsOnly.Load() {
			t.Error("the engine still tries FCALL after FUNCTION LOAD met NOPERM")
		}
		if n := calls("fcall"); n != 1 {
			t.Errorf("%v FCALLs, want the one that found out", n)
		}
		if n := calls("function|load"); n != 1 {
			t.Errorf("%v FUNCTION LOADs, want 1", n)
		}
	})
	t.Run("preloaded", func(t *testing.T) {
		reset(t)
		if err := admin.FunctionLoad(ctx, lua.Library()).Err(); err != nil {
			t.Fatal(err)
		}
		l := decide(t, aclClient(t, srv, "preloaded", scriptsOnly+" +fcall"), "c")
		if l.e.scriptsOnly.Load() || calls("fcall") != 4 || calls("evalsha") != 0 {
			t.Errorf("scripts only %v, %v FCALLs, %v EVALSHAs: want 4 FCALLs", l.e.scriptsOnly.Load(), calls("fcall"), calls("evalsha"))
		}
	})
	t.Run("least_privilege", func(t *testing.T) {
		reset(t)
		l := decide(t, aclClient(t, srv, "functions", aclCommands), "d")
		if l.e.scriptsOnly.Load() || calls("evalsha") != 0 || !libraryLoaded(t, admin) {
			t.Errorf("scripts only %v, %v EVALSHAs, library loaded %v: want FCALL", l.e.scriptsOnly.Load(), calls("evalsha"), libraryLoaded(t, admin))
		}
	})
}

// TestFunctionsMiniredis: miniredis has no functions (unknown command):
// the engine sends scripts, silently, and decides as before.
func TestFunctionsMiniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	for _, pipelining := range []bool{true, false} {
		l := mustNew(t, c, PerMinute(10), WithPipelining(pipelining), WithNamespace(fmt.Sprint("mini-", pipelining)))
		spendAll(t, l, 10, 1, identities(5))
		if !l.e.scriptsOnly.Load() {
			t.Errorf("pipelining %v: the engine still tries FCALL on miniredis", pipelining)
		}
	}
	// A batch first: the fallback from a pipeline of several FCALLs.
	l := mustNew(t, c, PerMinute(10), WithNamespace("mini-batch"))
	ids := identities(5)
	reqs := make([]Request, len(ids))
	for i, id := range ids {
		reqs[i] = Request{Identity: id, Cost: 1}
	}
	if _, err := l.BatchAllow(context.Background(), reqs); err != nil || !l.e.scriptsOnly.Load() {
		t.Fatalf("a first batch on miniredis: %v, scripts only %v", err, l.e.scriptsOnly.Load())
	}
	spendAll(t, l, 10, 2, ids)
}

// TestFunctionsOutOfMemory: a Redis past maxmemory refuses FCALL of a
// function that may write before running it; the call goes as a script,
// so a Peek is still decided (as with EVAL), and a spend fails with OOM.
// (TestOutOfMemory fills memory to just past maxmemory, where a small
// command may still pass; here maxmemory is far below what Redis uses.)
func TestFunctionsOutOfMemory(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	l := mustNew(t, admin, PerMinute(10), WithNamespace("oom"), WithFailStrategy(FailClosed), WithTimeout(2*time.Second))
	if _, err := l.Allow(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(ctx, "maxmemory", "0").Err() })
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Peek(ctx, "u"); err != nil || res.Remaining != 9 {
		t.Fatalf("Peek under OOM: %+v %v", res, err)
	}
	var be *BackendError
	if _, err := l.Allow(ctx, "u"); !errors.As(err, &be) || be.Code != "OOM" {
		t.Fatalf("Allow under OOM: %v, want OOM", err)
	}
	if l.e.scriptsOnly.Load() {
		t.Error("OOM switched the engine to scripts for good")
	}
	if st := commandStats(t, admin, "fcall"); st["rejected_calls"] != 2 {
		t.Errorf("FCALL %v, want 2 refused up front", st)
	}
}

// TestFunctionsTwoVersions: another version of this package (another
// library text, so another library name) shares the Redis: each loads its
// own library beside the other's, neither replaces the other, and both
// decide.
func TestFunctionsTwoVersions(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	version := strings.TrimPrefix(libraryName(), "ratelimit_")
	// The other version: another text (a comment), another version.
	other := strings.ReplaceAll(lua.Library(), version, "0123456789ab") + "-- another version\n"
	if _, err := admin.FunctionLoad(ctx, other).Result(); err != nil {
		t.Fatal(err)
	}
	l := mustNew(t, admin, PerMinute(10), WithNamespace("v"))
	spendAll(t, l, 10, 1, identities(3))
	libs, err := admin.FunctionList(ctx, redis.FunctionListQuery{WithCode: true}).Result()
	if err != nil {
		t.Fatal(err)
	}
	code := map[string]string{}
	for _, lib := range libs {
		code[lib.Name] = lib.Code
	}
	if len(code) != 2 || code["ratelimit_0123456789ab"] != other || code[libraryName()] != lua.Library() {
		t.Fatalf("libraries %v, want both versions, each with its own code", func() []string {
			var names []string
			for n := range code {
				names = append(names, n)
			}
			return names
		}())
	}
	// The other version still decides, on its own function.
	key, _ := l.Key("user:0")
	reply, err := admin.FCall(ctx, "ratelimit_decide_0123456789ab", []string{key}, 1, 0, TokenBucket.scriptID(), 1, 6000000, 10, 0, 0).Int64Slice()
	if err != nil || len(reply) != 5 || reply[1] != 8 {
		t.Errorf("the other version's function: %v %v, want 8 left", reply, err)
	}
}

// TestFunctionsCluster: on a real 3-master Cluster each master gets the
// library on demand, for lone decisions and for a pipeline of FCALLs
// spanning every master after all of them lost their functions; no call
// goes as a script.
func TestFunctionsCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	ctx := context.Background()
	masters := make([]*redis.Client, len(cluster.Masters))
	for i, m := range cluster.Masters {
		masters[i] = m.Client(t)
	}
	// Identities on every master.
	l := mustNew(t, cc, PerMinute(10), WithNamespace("fc"), WithTimeout(5*time.Second))
	ids := identities(60)
	perMaster := map[string]int{}
	for _, id := range ids {
		key, _ := l.Key(id)
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		perMaster[m.Options().Addr]++
	}
	if len(perMaster) != len(masters) {
		t.Fatalf("identities on %d masters, want %d", len(perMaster), len(masters))
	}
	for round := int64(1); round < 7; round += 2 {
		for _, m := range masters {
			if err := m.FunctionFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		spendAll(t, l, 10, round, ids)
		for i, m := range masters {
			if !libraryLoaded(t, m) {
				t.Errorf("round %d: master %d has no library", round, i)
			}
		}
	}
	for i, m := range masters {
		if st := commandStats(t, m, "evalsha"); st["calls"] != 0 {
			t.Errorf("master %d ran EVALSHA %v times", i, st["calls"])
		}
	}
	if l.e.scriptsOnly.Load() {
		t.Error("the engine fell back to scripts on a Redis 7 Cluster")
	}
}

// TestFunctionsRing: on a Ring of two servers each shard gets the library
// on demand, also after both lost their functions.
func TestFunctionsRing(t *testing.T) {
	s1, s2 := redistestStart(t), redistestStart(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": s1.Addr, "b": s2.Addr}, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = ring.Close() })
	shards := []*redis.Client{s1.Client(t), s2.Client(t)}
	l := mustNew(t, ring, PerMinute(10), WithNamespace("ring"))
	ids := identities(40)
	for round := int64(1); round < 5; round += 2 {
		for _, s := range shards {
			if err := s.FunctionFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}
		spendAll(t, l, 10, round, ids)
		for i, s := range shards {
			if !libraryLoaded(t, s) {
				t.Errorf("round %d: shard %d has no library", round, i)
			}
			if st := commandStats(t, s, "evalsha"); st["calls"] != 0 {
				t.Errorf("shard %d ran EVALSHA %v times", i, st["calls"])
			}
		}
	}
}

// TestFateOf sorts the errors an FCALL or a FUNCTION LOAD meets, in the
// wordings of Redis 7.0, 7.2 and later, Valkey and miniredis.
func TestFateOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want fcallFate
	}{
		{nil, fateOther},
		{context.DeadlineExceeded, fateOther},
		{proto("ERR Function not found"), fateMissing},
		{proto("ERR unknown command 'FCALL', with args beginning with: 'ratelimit_decide_x' '1' "), fateUnsupported},
		{proto("ERR unknown command `fcall`, with args beginning with: "), fateUnsupported},
		{proto("ERR unknown command 'FUNCTION', with args beginning with: 'LOAD' "), fateUnsupported},
		{proto("NOPERM this user has no permissions to run the 'fcall' command"), fateUnsupported},
		{proto("NOPERM User limiter has no permissions to run the 'fcall' command"), fateUnsupported},
		{proto("NOPERM User limiter has no permissions to run the 'function|load' command"), fateUnsupported},
		{proto("NOPERM this user has no permissions to access one of the keys used as arguments"), fateOther},
		{proto("NOPERM No permissions to access a key script: ratelimit_decide_x, on @user_function:1."), fateOther},
		{proto("OOM command not allowed when used memory > 'maxmemory'."), fateRefused},
		{proto("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), fateRefused},
		{proto("READONLY You can't write against a read only replica."), fateRefused},
		{proto("NOREPLICAS Not enough good replicas to write."), fateRefused},
		{proto("WRONGTYPE Operation against a key holding the wrong kind of value script: ratelimit_decide_x"), fateOther},
		{proto("ERR ratelimit: decide: invalid argument"), fateOther},
	} {
		if got := fateOf(tc.err); got != tc.want {
			t.Errorf("fateOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// proto is a Redis error reply, as go-redis's own (internal) type is: a
// redis.Error.
func proto(msg string) error { return replyError(msg) }

type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// refuseLibrary is a hook that sends Redis a library it refuses (a
// compile error) instead of the real one.
type refuseLibrary struct{}

func (refuseLibrary) DialHook(next redis.DialHook) redis.DialHook { return next }
func (refuseLibrary) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) == 3 && cmd.Name() == "function" && fmt.Sprint(a[1]) == "load" {
			a[2] = "#!lua name=broken\nthis is not lua"
		}
		return next(ctx, cmd)
	}
}
func (refuseLibrary) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFunctionsLibraryRefused: a Redis that refuses the library (here a
// compile error) makes the engine send scripts for good, after one
// FUNCTION LOAD: decisions stay correct, alone and in batches.
func TestFunctionsLibraryRefused(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	for _, pipelining := range []bool{true, false} {
		for _, first := range []string{"alone", "batch"} {
			t.Run(fmt.Sprintf("pipelining=%v/%s", pipelining, first), func(t *testing.T) {
				c := srv.Client(t)
				c.AddHook(refuseLibrary{})
				if err := admin.ConfigResetStat(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				l := mustNew(t, c, PerMinute(10), WithPipelining(pipelining), WithNamespace(fmt.Sprint("refused-", pipelining, "-", first)))
				ids := identities(6)
				if first == "batch" {
					reqs := []Request{{Identity: "x", Cost: 1}, {Identity: "y", Cost: 1}}
					if res, err := l.BatchAllow(context.Background(), reqs); err != nil || !res[0].Allowed || !res[1].Allowed {
						t.Fatalf("first batch: %+v %v", res, err)
					}
				}
				spendAll(t, l, 10, 1, ids)
				if !l.e.scriptsOnly.Load() {
					t.Error("the engine still tries FCALL after Redis refused the library")
				}
				if st := commandStats(t, admin, "function|load"); st["calls"]+st["failed_calls"] < 1 || st["calls"]+st["failed_calls"] > 2 {
					t.Errorf("FUNCTION LOAD %v, want one (or two, from one pipeline's calls)", st)
				}
				if libraryLoaded(t, admin) {
					t.Error("a library is loaded")
				}
			})
		}
	}
}
