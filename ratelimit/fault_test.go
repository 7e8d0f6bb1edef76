package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// This file drives real redis-server processes into the failures users meet
// (a hung server, a restart, killed connections, a flushed script cache, a
// full memory, a runaway script) and checks that every entry point answers
// as README's "What happens when Redis misbehaves" says: in bounded time,
// decided by the fail strategy, with a typed error that is also published.

// faultQuota is the limit of every kind in the fault tables: five calls,
// then a denial.
const faultQuota = 5

// faultKind is one way to ask the library for a decision: a Limiter of each
// algorithm, a MultiLimiter, a ConcurrencyLimiter. call makes one decision
// of cost 1 and reports the Result the caller got.
type faultKind struct {
	name    string
	ns      string
	fail    FailStrategy
	scripts []*redis.Script
	call    func(ctx context.Context, id string) (Result, error)
	peek    func(ctx context.Context, id string) (Result, error)
}

// faultKinds returns one faultKind per algorithm family, all on client with
// fail strategy fail, in namespaces of their own ("<prefix>-<kind>").
func faultKinds(t testing.TB, client redis.UniversalClient, prefix string, fail FailStrategy, opts ...Option) []faultKind {
	t.Helper()
	var kinds []faultKind
	with := func(name string) []Option {
		return append(slices.Clone(opts), WithNamespace(prefix+"-"+name), WithFailStrategy(fail))
	}
	for _, alg := range limiterAlgorithms {
		l := mustNew(t, client, PerMinute(faultQuota), append(with(alg.String()), WithAlgorithm(alg))...)
		kinds = append(kinds, faultKind{
			name: alg.String(), ns: l.Namespace(), fail: fail, scripts: []*redis.Script{decideScript},
			call: func(ctx context.Context, id string) (Result, error) { return l.Allow(ctx, id) },
			peek: l.Peek,
		})
	}
	m := mustNewMulti(t, client, []Quota{
		{Name: "minute", Limit: PerMinute(faultQuota)},
		{Name: "hour", Limit: PerHour(100 * faultQuota), Algorithm: FixedWindow},
	}, with("multi")...)
	kinds = append(kinds, faultKind{
		name: "multi", ns: m.Namespace(), fail: fail, scripts: []*redis.Script{multiScript},
		call: func(ctx context.Context, id string) (Result, error) {
			res, err := m.Allow(ctx, id)
			return res.Result, err
		},
		peek: func(ctx context.Context, id string) (Result, error) {
			res, err := m.Peek(ctx, id)
			return res.Result, err
		},
	})
	c := mustNewConcurrency(t, client, faultQuota, with("concurrency")...)
	kinds = append(kinds, faultKind{
		name: "concurrency", ns: c.Namespace(), fail: fail, scripts: []*redis.Script{concurrencyScript},
		call: func(ctx context.Context, id string) (Result, error) {
			lease, res, err := c.Acquire(ctx, id, 1)
			if res.Allowed != (lease != nil) {
				t.Errorf("concurrency: lease %v with %+v", lease, res)
			}
			return res, err // the lease is never released: it expires
		},
		peek: c.Peek,
	})
	return kinds
}

// faultKindsBoth returns the faultKinds of both fail strategies on client
// (namespaces "open-..." and "closed-..."), publishing to one bus with a
// recorder, returned too.
func faultKindsBoth(t testing.TB, client redis.UniversalClient, opts ...Option) ([]faultKind, *recorder) {
	t.Helper()
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	opts = append(slices.Clone(opts), WithBus(bus))
	return append(faultKinds(t, client, "open", FailOpen, opts...), faultKinds(t, client, "closed", FailClosed, opts...)...), rec
}

func (k faultKind) failReason() Reason {
	if k.fail == FailClosed {
		return ReasonFailClosed
	}
	return ReasonFailOpen
}

// checkFailed reports, as a string for t.Errorf, what is wrong with a call
// that should have been decided by the fail strategy because of a backend
// error of one of the types want; "" when nothing is.
func (k faultKind) checkFailed(res Result, err error, want ...ErrorType) string {
	var be *BackendError
	switch {
	case !errors.As(err, &be) || !errors.Is(err, ErrBackend):
		return fmt.Sprintf("%s/%v: error %v (%T), want a *BackendError", k.name, k.fail, err, err)
	case !slices.Contains(want, be.Type):
		return fmt.Sprintf("%s/%v: error type %v (%v), want one of %v", k.name, k.fail, be.Type, err, want)
	case res.Reason != k.failReason() || res.Allowed != (k.fail == FailOpen):
		return fmt.Sprintf("%s/%v: result %+v, want the fail strategy's", k.name, k.fail, res)
	case !strings.HasPrefix(err.Error(), "ratelimit:"):
		return fmt.Sprintf("%s/%v: message %q lacks the ratelimit: prefix", k.name, k.fail, err)
	}
	return ""
}

// checkEvents checks that events holds one event per call for the kinds,
// each carrying a *BackendError of a type in want and the fail strategy's
// reason, and returns how many there were.
func checkEvents(t *testing.T, events []Event, kinds []faultKind, want ...ErrorType) {
	t.Helper()
	byNS := map[string]faultKind{}
	for _, k := range kinds {
		byNS[k.ns] = k
	}
	for _, e := range events {
		k, ok := byNS[e.Namespace]
		if !ok {
			t.Errorf("event from an unknown namespace %q", e.Namespace)
			continue
		}
		if msg := k.checkFailed(e.Result, e.Err, want...); msg != "" {
			t.Errorf("published: %s", msg)
		}
	}
}

// pollUntil calls f every 10 ms until it returns true or within passes, and
// reports whether it did.
func pollUntil(within time.Duration, f func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recoverKinds polls every kind until Redis decides again (bounded), and
// returns the first result each got from Redis.
func recoverKinds(t *testing.T, kinds []faultKind, id string) []Result {
	t.Helper()
	out := make([]Result, len(kinds))
	for i, k := range kinds {
		var res Result
		var err error
		if !pollUntil(10*time.Second, func() bool {
			res, err = k.call(context.Background(), id)
			return err == nil
		}) {
			t.Fatalf("%s/%v: Redis did not decide again within 10s: %v", k.name, k.fail, err)
		}
		if res.Reason != ReasonQuota {
			t.Errorf("%s/%v after recovery: %+v", k.name, k.fail, res)
		}
		out[i] = res
	}
	return out
}

// waitGoroutines waits (bounded) until at most limit goroutines run, and
// reports the last count.
func waitGoroutines(limit int, within time.Duration) (int, bool) {
	n := runtime.NumGoroutine()
	ok := pollUntil(within, func() bool {
		n = runtime.NumGoroutine()
		return n <= limit
	})
	return n, ok
}

// latencySummary is what the pause test reports for the closing note.
type latencySummary struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(ds []time.Duration) latencySummary {
	if len(ds) == 0 {
		return latencySummary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return latencySummary{n: len(s), p50: at(0.50), p99: at(0.99), max: s[len(s)-1]}
}

// pauseKind hangs a server: the process stopped (SIGSTOP), or every client
// paused by the server itself (CLIENT PAUSE ALL), which unlike SIGSTOP keeps
// answering the TCP handshake and the pausing command. window is how long
// calls may start after begin and still be sure to end inside the pause.
type pauseKind struct {
	name   string
	window time.Duration
	begin  func(t *testing.T, srv *redistest.Server, admin *redis.Client)
	end    func(t *testing.T, srv *redistest.Server, admin *redis.Client)
}

// clientPauseFor is how long CLIENT PAUSE holds: Redis cannot be unpaused
// early (CLIENT UNPAUSE is paused too in ALL mode), so the test waits it
// out.
const clientPauseFor = 2 * time.Second

var pauseKinds = []pauseKind{
	{
		name:   "sigstop",
		window: time.Minute, // until the test resumes it
		begin:  func(_ *testing.T, srv *redistest.Server, _ *redis.Client) { srv.Pause() },
		end:    func(_ *testing.T, srv *redistest.Server, _ *redis.Client) { srv.Resume() },
	},
	{
		name:   "client_pause",
		window: clientPauseFor / 2,
		begin: func(t *testing.T, _ *redistest.Server, admin *redis.Client) {
			if err := admin.Do(context.Background(), "CLIENT", "PAUSE", clientPauseFor.Milliseconds(), "ALL").Err(); err != nil {
				t.Fatalf("CLIENT PAUSE: %v", err)
			}
		},
		end: func(t *testing.T, _ *redistest.Server, admin *redis.Client) {
			if !pollUntil(2*clientPauseFor, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), clientPauseFor)
				defer cancel()
				return admin.Ping(ctx).Err() == nil
			}) {
				t.Fatal("Redis still paused after twice the CLIENT PAUSE time")
			}
		},
	},
}

// TestPausedRedis hangs Redis (SIGSTOP, then CLIENT PAUSE ALL) under 50
// concurrent callers spread over every algorithm, the multi-limit call and
// the leases, each kind under both fail strategies, with a client that
// applies context deadlines to its socket (ContextTimeoutEnabled) and one
// that does not (the limiter then guards each call with a goroutine). Every
// call must return within the backend timeout plus slack, decided by the
// fail strategy, with a timeout error returned and published; goroutines
// must stay bounded during the pause (no pile-up: at most one per caller
// plus one per pooled connection) and return to the baseline after it.
// Latency figures are logged for the closing note ("go test -run
// TestPausedRedis -v ./ratelimit").
func TestPausedRedis(t *testing.T) {
	const (
		timeout  = 100 * time.Millisecond
		slack    = 500 * time.Millisecond // a loaded 2-core CI machine under -race
		callers  = 50
		callsPer = 4
		poolSize = 10
	)
	for _, pause := range pauseKinds {
		for _, direct := range []bool{true, false} {
			for _, pipelining := range []bool{true, false} {
				clientKind := "ctx_timeout"
				if !direct {
					clientKind = "no_ctx_timeout"
				}
				pipe := "pipelined"
				if !pipelining {
					pipe = "unpipelined"
				}
				t.Run(pause.name+"/"+clientKind+"/"+pipe, func(t *testing.T) {
					srv := redistestStart(t)
					admin := srv.Client(t)
					c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: direct, PoolSize: poolSize})
					t.Cleanup(func() { _ = c.Close() })
					kinds, rec := faultKindsBoth(t, c, WithTimeout(timeout), WithPipelining(pipelining))
					// Load every script and dial the pool's connections first.
					for _, k := range kinds {
						if _, err := k.call(context.Background(), "warm"); err != nil {
							t.Fatalf("%s before the pause: %v", k.name, err)
						}
					}
					base := runtime.NumGoroutine()
					before := len(rec.all())

					pause.begin(t, srv, admin)
					resumed := false
					defer func() {
						if !resumed {
							pause.end(t, srv, admin)
						}
					}()
					callsUntil := time.Now().Add(pause.window)
					var peak atomic.Int64
					samplerDone := make(chan struct{})
					stopSampler := make(chan struct{})
					go func() {
						defer close(samplerDone)
						for {
							if n := int64(runtime.NumGoroutine()); n > peak.Load() {
								peak.Store(n)
							}
							select {
							case <-stopSampler:
								return
							case <-time.After(5 * time.Millisecond):
							}
						}
					}()
					durations := make([][]time.Duration, callers)
					var wg sync.WaitGroup
					for i := range callers {
						k := kinds[i%len(kinds)]
						wg.Add(1)
						go func() {
							defer wg.Done()
							for j := 0; j < callsPer && time.Now().Before(callsUntil); j++ {
								start := time.Now()
								res, err := k.call(context.Background(), "caller-"+strconv.Itoa(i))
								durations[i] = append(durations[i], time.Since(start))
								if msg := k.checkFailed(res, err, ErrorTimeout); msg != "" {
									t.Errorf("during the pause: %s", msg)
								}
							}
						}()
					}
					wg.Wait()
					close(stopSampler)
					<-samplerDone
					events := rec.all()[before:]
					// Every caller has returned while Redis is still hung. What
					// may be left is bounded by the pool, not by the calls: per
					// pooled connection, the goroutine reading it and one of
					// go-redis's dialers still in the HELLO of a new one (it
					// dials up to PoolSize at once), which the client without
					// context deadlines keeps until its ReadTimeout (or until
					// Redis answers).
					left, settled := waitGoroutines(base+2*poolSize+10, time.Second)
					pause.end(t, srv, admin)
					resumed = true

					all := slices.Concat(durations...)
					s := summarize(all)
					grew := int(peak.Load()) - base
					t.Logf("FIGURES pause=%s client=%s %s timeout=%v callers=%d calls=%d p50=%v p99=%v max=%v goroutines: base %d, peak %+d, left while paused %+d",
						pause.name, clientKind, pipe, timeout, callers, s.n, s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond),
						s.max.Round(time.Millisecond), base, grew, left-base)
					if s.n < callers {
						t.Fatalf("only %d calls ran inside the pause", s.n)
					}
					// Not a speed assertion: the promise is "within the timeout".
					if s.max > timeout+slack {
						t.Errorf("slowest call took %v, past the %v timeout + %v slack", s.max, timeout, slack)
					}
					if len(events) != s.n {
						t.Errorf("%d events published for %d calls", len(events), s.n)
					}
					checkEvents(t, events, kinds, ErrorTimeout)
					// Each caller is one goroutine; without the context deadline
					// each call runs on one more, which leaves at the deadline
					// unless it holds a pooled connection; go-redis adds its
					// dialers (at most one per pooled connection). 200 calls
					// must not leave 200 goroutines behind.
					if limit := 2*callers + 2*poolSize + 40; grew > limit {
						t.Errorf("goroutines grew by %d during the pause, more than 2 × %d callers + 2 × %d pooled connections + 40", grew, callers, poolSize)
					}
					if !settled {
						t.Errorf("%d goroutines after every caller returned, still paused: more than %d before + 2 × %d pooled connections + 10", left, base, poolSize)
					}

					recoverKinds(t, kinds, "after")
					if n, ok := waitGoroutines(base+4, 10*time.Second); !ok {
						t.Errorf("%d goroutines 10s after the pause, %d before it", n, base)
					}
				})
			}
		}
	}
}

// TestRestartEveryAlgorithm kills Redis and starts it again on the same port,
// empty (no persistence), for every kind: while it is down the fail strategy
// decides with a connection or timeout error, returned and published; after
// the restart the same limiters decide from Redis again, the scripts having
// been reloaded through the NOSCRIPT fallback, and the state is gone (a full
// quota again).
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
	for i, res := range recoverKinds(t, kinds, "u") {
		if !res.Allowed || res.Remaining != faultQuota-1 {
			t.Errorf("%s/%v after the restart: %+v, want a fresh quota (the state was lost)", kinds[i].name, kinds[i].fail, res)
		}
	}
	if cached, err := admin.ScriptExists(ctx, hashes...).Result(); err != nil || slices.Contains(cached, false) {
		t.Fatalf("scripts not reloaded after the restart: %v %v", cached, err)
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
		// also shows its last command, evalsha: only the blocked flag tells
		// a held call), then kill them all.
		var ids []string
		if !pollUntil(3*time.Second, func() bool {
			var cmds []string
			ids, cmds = limiterConns(t, admin, name)
			held := 0
			for _, cmd := range cmds {
				if cmd == "evalsha+blocked" {
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
