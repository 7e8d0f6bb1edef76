package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// queued returns how many calls wait in the dispatcher's queue.
func (d *dispatcher) queued() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue)
}

// inFlight returns how many slots are taken.
func (d *dispatcher) inFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type outcome struct {
	res Result
	err error
}

// fillSlots pauses srv and starts one call per connection slot of l, so that
// every later call queues in the dispatcher. The returned channel yields the
// slot calls' outcomes once srv resumes.
func fillSlots(t *testing.T, srv interface{ Pause() }, l *Limiter) <-chan outcome {
	t.Helper()
	srv.Pause()
	out := make(chan outcome, l.e.pipe.maxConns)
	for i := range l.e.pipe.maxConns {
		go func() {
			res, err := l.Allow(context.Background(), "slot-"+strconv.Itoa(i))
			out <- outcome{res, err}
		}()
	}
	waitFor(t, "the slot calls to be in flight", func() bool { return l.e.pipe.inFlight() == l.e.pipe.maxConns })
	return out
}

// TestPipelineSharesRoundTrips queues calls behind a paused Redis: once it
// resumes they all go out as one pipeline, and each gets its own exact
// decision.
func TestPipelineSharesRoundTrips(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	rec := &recorder{}
	l := mustNew(t, c, PerMinute(10), WithTimeout(10*time.Second), WithSubscribers(rec))
	slots := fillSlots(t, srv, l)
	defer srv.Resume()

	const n = 40
	outs := make([]chan outcome, n)
	for i := range outs {
		outs[i] = make(chan outcome, 1)
		go func() {
			// identity i spends i%5+1 tokens
			res, err := l.AllowN(context.Background(), "id-"+strconv.Itoa(i), int64(i%5+1))
			outs[i] <- outcome{res, err}
		}()
	}
	waitFor(t, "all calls to queue", func() bool { return l.e.pipe.queued() == n })
	before := l.e.pipe.flushN.Load()
	srv.Resume()
	for i, ch := range outs {
		o := <-ch
		if o.err != nil || !o.res.Allowed || o.res.Reason != ReasonQuota || o.res.Remaining != int64(10-(i%5+1)) {
			t.Errorf("call %d: %+v %v, want allowed with %d remaining", i, o.res, o.err, 10-(i%5+1))
		}
	}
	for range l.e.pipe.maxConns {
		if o := <-slots; o.err != nil || !o.res.Allowed {
			t.Errorf("slot call: %+v %v", o.res, o.err)
		}
	}
	if got := l.e.pipe.flushN.Load() - before; got != 1 {
		t.Errorf("%d calls queued together went out in %d pipelines, want 1", n, got)
	}
	if got := len(rec.all()); got != n+l.e.pipe.maxConns {
		t.Errorf("%d events, want one per call (%d)", got, n+l.e.pipe.maxConns)
	}
	waitFor(t, "the flusher to end", func() bool { return l.e.pipe.inFlight() == 0 })
}

// pipelineHook rewrites the first pipeline of script calls it sees with
// edit, and records the length of every such pipeline (go-redis also sends
// its connection handshake as a pipeline; that one is left alone).
// pipelineHook watches the round trips of script calls (a pipeline, or a
// single command): how many commands and how many decisions each carried;
// it can edit a pipeline and hold the replies of the next round trip back.
type pipelineHook struct {
	mu        sync.Mutex
	edit      func([]redis.Cmder) []redis.Cmder
	hold      func() // called once, after the next round trip of several calls or decisions ran
	sizes     []int  // commands per round trip
	decisions []int  // decide.lua decisions per round trip
}

// reset forgets the round trips seen so far (a warm-up's).
func (h *pipelineHook) reset() {
	h.mu.Lock()
	h.sizes, h.decisions = nil, nil
	h.mu.Unlock()
}

func isScriptCall(cmd redis.Cmder) bool {
	return cmd.Name() == "evalsha" || cmd.Name() == "eval" || cmd.Name() == "fcall"
}

// decisionsIn returns how many decisions cmd carries: decide.lua's first
// argument after the keys, 0 for another script.
func decisionsIn(cmd redis.Cmder) int {
	a := cmd.Args()
	if len(a) < 4 {
		return 0
	}
	nkeys, ok := a[2].(int)
	if !ok || fmt.Sprint(a[1]) != decideScript.Hash() && cmd.Name() == "evalsha" || len(a) <= 3+nkeys {
		return 0
	}
	n, _ := strconv.Atoi(fmt.Sprint(a[3+nkeys]))
	return n
}

func (h *pipelineHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pipelineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isScriptCall(cmd) {
			return next(ctx, cmd)
		}
		n := decisionsIn(cmd)
		h.mu.Lock()
		var hold func()
		if n > 1 { // a batch, not a lone call
			hold, h.hold = h.hold, nil
		}
		h.sizes = append(h.sizes, 1)
		h.decisions = append(h.decisions, n)
		h.mu.Unlock()
		err := next(ctx, cmd)
		if hold != nil {
			hold()
		}
		return err
	}
}

func (h *pipelineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || !isScriptCall(cmds[0]) {
			return next(ctx, cmds)
		}
		h.mu.Lock()
		edit := h.edit
		hold := h.hold
		h.edit, h.hold = nil, nil
		if edit != nil {
			cmds = edit(cmds)
		}
		h.sizes = append(h.sizes, len(cmds))
		n := 0
		for _, c := range cmds {
			n += decisionsIn(c)
		}
		h.decisions = append(h.decisions, n)
		h.mu.Unlock()
		err := next(ctx, cmds)
		if hold != nil {
			hold()
		}
		return err
	}
}

// TestPipelineNoScriptMidPipeline runs a pipeline of EVALSHA calls (as an
// engine without functions sends) in which Redis flushes its script cache
// half way (SCRIPT FLUSH inserted between the calls): the calls before it
// succeed, those after it fail with NOSCRIPT and are retried, and only
// they. Every identity is spent exactly once.
func TestPipelineNoScriptMidPipeline(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	hook := &pipelineHook{}
	c.AddHook(hook)
	l := mustNew(t, c, PerMinute(10), WithTimeout(5*time.Second))
	ctx := context.Background()
	if err := decideScript.Load(ctx, c).Err(); err != nil { // the script is cached
		t.Fatal(err)
	}
	hook.reset()
	var flush *redis.StatusCmd
	hook.edit = func(cmds []redis.Cmder) []redis.Cmder {
		flush = redis.NewStatusCmd(ctx, "script", "flush")
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
			cmd: newDecideCmd(ctx, []*decision{l.decision(key, 0, 3, modeSpend, nil)}, false)})
	}
	l.e.pipelined(ctx, calls)
	if flush == nil || flush.Err() != nil {
		t.Fatalf("SCRIPT FLUSH was not run inside the pipeline: %v", flush)
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
	}
	hook.mu.Lock()
	sizes := append([]int(nil), hook.sizes...)
	hook.mu.Unlock()
	// The pipeline (n calls + the flush), then the retry of the n-5 that
	// failed; the script load in between is not a pipeline.
	if len(sizes) != 2 || sizes[0] != n+1 || sizes[1] != n-5 {
		t.Errorf("pipelines of %v, want [%d %d]: only the failed calls are retried", sizes, n+1, n-5)
	}
	// Each identity was spent once: 10 - 3.
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
}

// TestPipelineScriptFlush flushes the script cache while calls queue, on an
// engine that sends scripts (a server without functions): the whole batch
// gets NOSCRIPT, reloads the script and succeeds.
func TestPipelineScriptFlush(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	admin := srv.Client(t)
	l := mustNew(t, c, PerMinute(10), WithTimeout(10*time.Second))
	l.e.scriptsOnly.Store(true)
	ctx := context.Background()
	if _, err := l.Allow(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	}
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	slots := fillSlots(t, srv, l)
	defer srv.Resume()
	const n = 20
	outs := make(chan outcome, n)
	for i := range n {
		go func() {
			res, err := l.Allow(ctx, "id-"+strconv.Itoa(i))
			outs <- outcome{res, err}
		}()
	}
	waitFor(t, "all calls to queue", func() bool { return l.e.pipe.queued() == n })
	srv.Resume()
	for range n + l.e.pipe.maxConns {
		var o outcome
		select {
		case o = <-outs:
		case o = <-slots:
		}
		if o.err != nil || !o.res.Allowed || o.res.Remaining != 9 {
			t.Errorf("after SCRIPT FLUSH: %+v %v", o.res, o.err)
		}
	}
	ok, err := admin.ScriptExists(ctx, decideScript.Hash()).Result()
	if err != nil || !ok[0] {
		t.Errorf("script not cached again: %v %v", ok, err)
	}
}

// TestPipelineCancel cancels one queued call and one call already sent in a
// pipeline: each returns at once with a canceled error, the others are
// unaffected, and the call canceled before it was sent never reaches Redis.
func TestPipelineCancel(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	hook := &pipelineHook{}
	c.AddHook(hook)
	l := mustNew(t, c, PerMinute(10), WithTimeout(10*time.Second))
	slots := fillSlots(t, srv, l)
	defer srv.Resume()

	ctx, cancel := context.WithCancel(context.Background())
	canceled := make(chan outcome, 1)
	go func() {
		res, err := l.Allow(ctx, "canceled")
		canceled <- outcome{res, err}
	}()
	const n = 10
	outs := make(chan outcome, n)
	for i := range n {
		go func() {
			res, err := l.Allow(context.Background(), "id-"+strconv.Itoa(i))
			outs <- outcome{res, err}
		}()
	}
	waitFor(t, "all calls to queue", func() bool { return l.e.pipe.queued() == n+1 })
	cancel()
	o := <-canceled // Redis is still paused: this returns by cancellation alone
	var be *BackendError
	if !errors.As(o.err, &be) || be.Type != ErrorCanceled || !errors.Is(o.err, context.Canceled) {
		t.Fatalf("canceled call: %v, want a canceled *BackendError", o.err)
	}
	if o.res.Allowed || o.res.Reason != ReasonCanceled {
		t.Errorf("canceled call's result %+v, want a denial with ReasonCanceled, FailOpen notwithstanding", o.res)
	}
	if l.e.pipe.queued() != n+1 {
		t.Fatalf("the queue changed while Redis was paused")
	}
	srv.Resume()
	for range n {
		if o := <-outs; o.err != nil || !o.res.Allowed || o.res.Remaining != 9 {
			t.Errorf("other call: %+v %v", o.res, o.err)
		}
	}
	for range l.e.pipe.maxConns {
		<-slots
	}
	key, _ := l.Key("canceled")
	if n, err := c.Exists(context.Background(), key).Result(); err != nil || n != 0 {
		t.Errorf("the call canceled before it was sent reached Redis (EXISTS = %d, %v)", n, err)
	}

	// Canceled after it was sent: the caller leaves at once, the rest of its
	// pipeline completes. The hook holds the pipeline's replies back.
	entered, gate := make(chan struct{}), make(chan struct{})
	hook.mu.Lock()
	hook.hold = func() { close(entered); <-gate }
	hook.mu.Unlock()
	slots = fillSlots(t, srv, l)
	ctx2, cancel2 := context.WithCancel(context.Background())
	sent := make(chan outcome, 1)
	go func() {
		res, err := l.Allow(ctx2, "sent-then-canceled")
		sent <- outcome{res, err}
	}()
	waitFor(t, "the call to queue", func() bool { return l.e.pipe.queued() == 1 })
	for i := range n {
		go func() {
			res, err := l.Allow(context.Background(), "later-"+strconv.Itoa(i))
			outs <- outcome{res, err}
		}()
	}
	waitFor(t, "all calls to queue", func() bool { return l.e.pipe.queued() == n+1 })
	srv.Resume()
	<-entered // the pipeline ran on Redis; its replies are held
	cancel2()
	if o := <-sent; !errors.Is(o.err, context.Canceled) {
		t.Fatalf("call canceled in flight: %v", o.err)
	}
	close(gate)
	for range n {
		if o := <-outs; o.err != nil || !o.res.Allowed || o.res.Remaining != 9 {
			t.Errorf("call in the same pipeline: %+v %v", o.res, o.err)
		}
	}
	for range l.e.pipe.maxConns {
		<-slots
	}
	waitFor(t, "the slots to be free", func() bool { return l.e.pipe.inFlight() == 0 })
	key, _ = l.Key("sent-then-canceled")
	if n, err := c.Exists(context.Background(), key).Result(); err != nil || n != 1 {
		t.Errorf("the call canceled after it was sent did not run (EXISTS = %d, %v)", n, err)
	}
}

// TestPipelineTimeout: behind a paused Redis each queued call leaves at its
// own deadline (the backend timeout, or its context's earlier one) with a
// timeout error: the fail strategy's result at the backend timeout, a
// denial with ReasonCanceled at the caller's own deadline.
func TestPipelineTimeout(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	l := mustNew(t, c, PerMinute(10), WithTimeout(300*time.Millisecond), WithFailStrategy(FailClosed))
	srv.Pause()
	defer srv.Resume()
	// Two slot calls and queued calls, all on a Redis that never answers.
	const n = 8
	type timed struct {
		outcome
		took time.Duration
		own  bool // the call with a deadline of its own
	}
	outs := make(chan timed, n)
	for i := range n {
		go func() {
			ctx := context.Background()
			if i == 0 { // an earlier deadline of its own
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
			}
			start := time.Now()
			res, err := l.Allow(ctx, "id-"+strconv.Itoa(i))
			outs <- timed{outcome{res, err}, time.Since(start), i == 0}
		}()
	}
	var timeouts int
	for range n {
		o := <-outs
		var be *BackendError
		if !errors.As(o.err, &be) || be.Type != ErrorTimeout {
			t.Errorf("call on a paused Redis: %v, want a timeout *BackendError", o.err)
			continue
		}
		switch {
		case o.own && (o.res.Allowed || o.res.Reason != ReasonCanceled):
			t.Errorf("result %+v at the caller's own deadline, want a denial with ReasonCanceled", o.res)
		case !o.own && (o.res.Allowed || o.res.Reason != ReasonFailClosed):
			t.Errorf("result %+v, want the fail-closed denial", o.res)
		}
		// Not a speed assertion: without per-call deadlines these calls
		// would wait for Redis forever.
		if o.took > 5*time.Second {
			t.Errorf("a call took %v against a 300ms backend timeout", o.took)
		}
		timeouts++
	}
	if timeouts != n {
		t.Fatalf("%d of %d calls timed out", timeouts, n)
	}
	srv.Resume()
	waitFor(t, "the flushers to end", func() bool { return l.e.pipe.inFlight() == 0 })
}

// TestPipelineFailStrategies stops Redis: concurrent calls on a FailOpen and
// a FailClosed limiter sharing one client each get their own limiter's
// decision, a backend error, and an event with it.
func TestPipelineFailStrategies(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	open := mustNew(t, c, PerMinute(10), WithNamespace("open"), WithBus(bus))
	closed := mustNew(t, c, PerMinute(10), WithNamespace("closed"), WithBus(bus), WithFailStrategy(FailClosed))
	ctx := context.Background()
	for _, l := range []*Limiter{open, closed} {
		if _, err := l.Allow(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}
	srv.Stop()
	const n = 16
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range n {
		for _, l := range []*Limiter{open, closed} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := l.Allow(ctx, "id-"+strconv.Itoa(i))
				wantOpen := l == open
				if !errors.Is(err, ErrBackend) || res.Allowed != wantOpen || res.Reason == ReasonQuota {
					bad.Add(1)
					t.Errorf("%s limiter on a stopped Redis: %+v %v", l.Namespace(), res, err)
				}
			}()
		}
	}
	wg.Wait()
	if bad.Load() != 0 {
		return
	}
	events := rec.all()[2:]
	if len(events) != 2*n {
		t.Fatalf("%d events, want %d", len(events), 2*n)
	}
	for _, e := range events {
		if e.Err == nil || (e.Namespace == "open") != e.Result.Allowed {
			t.Errorf("event %+v", e)
		}
	}
}

// TestPipelineConcurrentBound hammers one identity from 64 goroutines on two
// pipelining limiters (two clients), and checks the total allowed against
// the token bucket's bound on Redis's clock; it also checks that calls did
// share pipelines (more calls sent than pipelines).
func TestPipelineConcurrentBound(t *testing.T) {
	srv := redistestStart(t)
	ctx := context.Background()
	// A burst of a whole second of rate: a stall of the (shared, loaded)
	// test machine shorter than that loses no token, so the under-admission
	// check below stays meaningful without becoming flaky.
	lim := PerSecond(500).WithBurst(500)
	var limiters []*Limiter
	for range 2 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		limiters = append(limiters, mustNew(t, c, lim, WithFailStrategy(FailClosed), WithTimeout(2*time.Second)))
	}
	admin := srv.Client(t)
	before, err := admin.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var allowed, denied, failed, calls atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for _, l := range limiters {
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100000 && time.Now().Before(stop); i++ {
					calls.Add(1)
					res, err := l.Allow(ctx, "hot")
					switch {
					case err != nil:
						failed.Add(1)
					case res.Allowed:
						allowed.Add(1)
					default:
						denied.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	after, err := admin.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	bound := lim.Capacity() + int64(float64(lim.Rate)*after.Sub(before).Seconds()) + 1
	flushes := limiters[0].e.pipe.flushN.Load() + limiters[1].e.pipe.flushN.Load()
	piped := limiters[0].e.pipe.sentN.Load() + limiters[1].e.pipe.sentN.Load()
	t.Logf("allowed %d, denied %d, failed %d, bound %d over %v; %d calls, %d of them in %d pipelines (the others lone)",
		allowed.Load(), denied.Load(), failed.Load(), bound, after.Sub(before), calls.Load(), piped, flushes)
	if failed.Load() != 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if allowed.Load() > bound {
		t.Fatalf("over-admission with pipelining: allowed %d > bound %d", allowed.Load(), bound)
	}
	if float64(allowed.Load()) < 0.9*float64(bound) {
		t.Fatalf("allowed %d is under 90%% of bound %d", allowed.Load(), bound)
	}
	if piped <= flushes {
		t.Fatalf("64 concurrent callers never shared a pipeline: %d calls in %d pipelines", piped, flushes)
	}
}

// TestPipelineGuardedClient: with a client that ignores context deadlines
// every call goes through a flusher, and still leaves at the backend
// timeout when Redis hangs.
func TestPipelineGuardedClient(t *testing.T) {
	srv := redistestStart(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	l := mustNew(t, c, PerMinute(10), WithTimeout(50*time.Millisecond))
	ctx := context.Background()
	if res, err := l.Allow(ctx, "u"); err != nil || !res.Allowed || res.Remaining != 9 {
		t.Fatalf("%+v %v", res, err)
	}
	if l.e.pipe.flushN.Load() != 1 {
		t.Fatalf("a guarded call did not go through a flusher")
	}
	srv.Pause()
	start := time.Now()
	_, err := l.Allow(ctx, "u")
	took := time.Since(start)
	srv.Resume()
	var be *BackendError
	if !errors.As(err, &be) || be.Type != ErrorTimeout {
		t.Fatalf("paused Redis: %v, want a timeout", err)
	}
	if took >= time.Second { // the 2 s ReadTimeout would mean no guard
		t.Fatalf("Allow took %v with a 50ms timeout", took)
	}
	waitFor(t, "the flusher to end", func() bool { return l.e.pipe.inFlight() == 0 })
}

// TestPipeliningOff: WithPipelining(false) sends every call on its own.
func TestPipeliningOff(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithPipelining(false))...)
			if l.e.pipe != nil {
				t.Fatal("dispatcher present with pipelining off")
			}
			for i := range 3 {
				res, err := l.Allow(context.Background(), "u")
				if err != nil || !res.Allowed || res.Remaining != int64(9-i) {
					t.Fatalf("call %d: %+v %v", i, res, err)
				}
			}
		})
	}
}

// TestPipelineACLNoScript: a Redis user limited to the commands in the
// README's ACL line (no SCRIPT LOAD) still recovers pipelined calls and a
// batch from an empty script cache.
func TestPipelineACLNoScript(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	c := aclClient(t, srv, "limiter", aclCommands)
	hook := &pipelineHook{}
	c.AddHook(hook)
	l := mustNew(t, c, PerMinute(10), WithNamespace("acl"), WithTimeout(10*time.Second))
	reqs := []Request{{"a", 1}, {"b", 2}, {"a", 3}}
	results, err := l.BatchAllow(ctx, reqs) // the script was never loaded
	if err != nil {
		t.Fatalf("BatchAllow on an empty script cache as the ACL user: %v", err)
	}
	for i, want := range []int64{9, 8, 6} {
		if !results[i].Allowed || results[i].Remaining != want {
			t.Errorf("request %d: %+v, want %d remaining", i, results[i], want)
		}
	}
	hook.mu.Lock()
	sizes := append([]int(nil), hook.sizes...)
	hook.mu.Unlock()
	decisions := append([]int(nil), hook.decisions...)
	// The three decisions went as one call, which failed with NOSCRIPT;
	// its retry as EVAL succeeded without a third pass.
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != 1 || decisions[0] != 3 || decisions[1] != 3 {
		t.Errorf("round trips of %v commands and %v decisions, want [1 1] and [3 3]", sizes, decisions)
	}

	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	slots := fillSlots(t, srv, l)
	defer srv.Resume()
	outs := make(chan outcome, 10)
	for i := range 10 {
		go func() {
			res, err := l.Allow(ctx, "q-"+strconv.Itoa(i))
			outs <- outcome{res, err}
		}()
	}
	waitFor(t, "all calls to queue", func() bool { return l.e.pipe.queued() == 10 })
	srv.Resume()
	for range 10 {
		if o := <-outs; o.err != nil || !o.res.Allowed || o.res.Remaining != 9 {
			t.Errorf("queued call after SCRIPT FLUSH as the ACL user: %+v %v", o.res, o.err)
		}
	}
	for range l.e.pipe.maxConns {
		if o := <-slots; o.err != nil {
			t.Errorf("slot call: %v", o.err)
		}
	}
}
