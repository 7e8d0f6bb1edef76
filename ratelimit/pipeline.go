package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipelined decisions.
//
// A Limiter with pipelining on (the default, see WithPipelining) has a
// dispatcher. Concurrent calls queue in it, and whatever is queued goes to
// Redis as one pipeline of script calls as soon as a connection slot is
// free: one write and one read for the lot, instead of a round trip each.
// There is no timer: when a slot is free and nothing is queued, a call goes
// out at once, as one EVALSHA on the caller's own goroutine, exactly as
// without pipelining. So a lone caller pays nothing, and under load the
// batches grow by themselves with the queue (smart batching).
//
// Goroutines: the dispatcher has none of its own while idle. A flusher
// goroutine is started when queued calls find a slot free, and ends as soon
// as the queue is empty; it never outlives its last batch, which is bounded
// by the latest backend deadline of its calls (or the client's ReadTimeout,
// for a client without ContextTimeoutEnabled). No Close is needed.
//
// Each call keeps its own semantics: it leaves at its own backend timeout
// (WithTimeout) or its context's end, whichever comes first, whatever its
// batch does; a canceled call that has not been sent yet is dropped from its
// batch; the batch itself runs under a context of its own (without the
// callers' values or cancellation) with the latest deadline of its calls.
// A failed batch fails each of its calls with a classified *BackendError, and
// the caller's fail strategy decides, as for a single call.

const (
	// defaultPipelineConns is how many pipelines (or lone calls) one limiter
	// keeps in flight at once. Two lets Redis work on one batch while the
	// client reads the previous one and builds the next: on the 2-core
	// machine of BENCHMARKS.md, 1 gave about 20% fewer decisions/s at 64
	// callers than 2, and 3 or 4 no more than 2 (within noise) while sending
	// smaller batches and sending calls alone up to 4 callers.
	defaultPipelineConns = 2
	// maxPipelineBatch bounds the calls in one pipeline, and so the bytes
	// one connection writes before it reads.
	maxPipelineBatch = 512
)

// errBackendTimeout is what a queued call gets when its backend timeout
// passes before its reply came.
var errBackendTimeout = fmt.Errorf("ratelimit: no reply within the backend timeout: %w", context.DeadlineExceeded)

// scriptCall is one script call of a pipeline, and its outcome.
type scriptCall struct {
	script *redis.Script
	cmd    *redis.IntSliceCmd
	reply  []int64
	err    error
}

// Call states: who owns a queued call. The caller and the flusher each
// move a pending call on with one compare-and-swap; whoever loses knows the
// other side owns it.
const (
	callPending   uint32 = iota
	callCompleted        // the flusher filled in the outcome and signalled done
	callAbandoned        // the caller left (canceled or timed out); the flusher recycles it
)

type call struct {
	scriptCall
	ctx      context.Context // the caller's, read by the flusher for Err only
	deadline time.Time
	state    atomic.Uint32
	done     chan struct{} // buffered: completing never blocks
	timer    *time.Timer   // the backend timeout, reused with the call
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func putCall(c *call) {
	c.scriptCall = scriptCall{}
	c.ctx = nil
	c.state.Store(callPending)
	callPool.Put(c)
}

// dispatcher batches the concurrent script calls of one limiter.
type dispatcher struct {
	l        *Limiter
	maxConns int
	maxBatch int

	mu     sync.Mutex
	queue  []*call
	active int          // slots taken: lone calls and flushers in flight
	spare  [][]*call    // batch buffers of finished flushers, for reuse
	flushN atomic.Int64 // pipelines sent (for tests and benchmarks)
	sentN  atomic.Int64 // calls sent in them

	// alt, when set (by tests only), replaces the dispatcher: it is how
	// the benchmarks measure go-redis's own AutoPipeline in its place.
	alt func(ctx context.Context, script *redis.Script, cmd *redis.IntSliceCmd) ([]int64, *BackendError)
}

func newDispatcher(l *Limiter) *dispatcher {
	return &dispatcher{l: l, maxConns: defaultPipelineConns, maxBatch: maxPipelineBatch}
}

// do runs one script call through the dispatcher. Like exec, it retains
// neither keys nor args: they are copied into the command.
func (d *dispatcher) do(ctx context.Context, script *redis.Script, keys []string, args []any) ([]int64, *BackendError) {
	if ctx.Err() != nil {
		return nil, newBackendError(ctxErr(ctx))
	}
	cmd := newScriptCmd(ctx, script, keys, args)
	if d.alt != nil {
		return d.alt(ctx, script, cmd)
	}
	now := time.Now()
	deadline := now.Add(d.l.cfg.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}

	d.mu.Lock()
	if d.active < d.maxConns && len(d.queue) == 0 && d.l.direct {
		// A free slot and nobody waiting: go out at once, on this
		// goroutine, as a call of its own.
		d.active++
		d.mu.Unlock()
		defer d.release()
		return d.l.runOne(ctx, script, cmd)
	}
	c := callPool.Get().(*call)
	c.script, c.cmd, c.ctx, c.deadline = script, cmd, ctx, deadline
	d.queue = append(d.queue, c)
	var batch []*call
	if d.active < d.maxConns {
		d.active++
		batch = d.takeLocked(nil)
	}
	d.mu.Unlock()
	if batch != nil {
		go d.flush(batch)
	}
	return d.wait(ctx, c, deadline.Sub(now))
}

// wait blocks until c is completed, ctx ends or the backend timeout passes.
func (d *dispatcher) wait(ctx context.Context, c *call, timeout time.Duration) ([]int64, *BackendError) {
	if c.timer == nil {
		c.timer = time.NewTimer(timeout)
	} else {
		c.timer.Reset(timeout)
	}
	select {
	case <-c.done:
		stopTimer(c.timer)
	case <-ctx.Done():
		// Stop the timer before giving the call up: once abandoned it may
		// be recycled and its timer reset by another caller.
		stopTimer(c.timer)
		if c.state.CompareAndSwap(callPending, callAbandoned) {
			return nil, newBackendError(ctxErr(ctx))
		}
		<-c.done // completed meanwhile: take the reply
	case <-c.timer.C:
		if c.state.CompareAndSwap(callPending, callAbandoned) {
			return nil, newBackendError(errBackendTimeout)
		}
		<-c.done
	}
	reply, err := c.reply, c.err
	putCall(c)
	if err != nil {
		return nil, newBackendError(err)
	}
	return reply, nil
}

// stopTimer stops t and drains a tick it may have sent meanwhile, so that
// the pooled call's next wait does not see a stale timeout. (Since Go 1.23
// Stop alone guarantees that, but a program may still run with
// GODEBUG=asynctimerchan=1.)
func stopTimer(t *time.Timer) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
}

// release gives a lone call's slot back, or hands it to a flusher for what
// queued meanwhile.
func (d *dispatcher) release() {
	d.mu.Lock()
	if len(d.queue) == 0 {
		d.active--
		d.mu.Unlock()
		return
	}
	batch := d.takeLocked(nil)
	d.mu.Unlock()
	go d.flush(batch)
}

// takeLocked moves up to maxBatch queued calls into dst (or a spare
// buffer), oldest first.
func (d *dispatcher) takeLocked(dst []*call) []*call {
	if dst == nil {
		if n := len(d.spare); n > 0 {
			dst, d.spare = d.spare[n-1], d.spare[:n-1]
		} else {
			dst = make([]*call, 0, min(len(d.queue), d.maxBatch))
		}
	}
	n := min(len(d.queue), d.maxBatch)
	dst = append(dst[:0], d.queue[:n]...)
	rest := copy(d.queue, d.queue[n:])
	clear(d.queue[rest:])
	d.queue = d.queue[:rest]
	return dst
}

// flush sends batch, then whatever queued meanwhile, until the queue is
// empty; then it gives its slot back and ends.
func (d *dispatcher) flush(batch []*call) {
	for {
		d.run(batch)
		clear(batch)
		d.mu.Lock()
		if len(d.queue) == 0 {
			d.active--
			d.spare = append(d.spare, batch[:0])
			d.mu.Unlock()
			return
		}
		batch = d.takeLocked(batch)
		d.mu.Unlock()
	}
}

// run sends one batch as a pipeline and completes each of its calls.
func (d *dispatcher) run(batch []*call) {
	now := time.Now()
	var deadline time.Time
	live := make([]*scriptCall, 0, len(batch))
	sent := batch[:0]
	for _, c := range batch {
		switch {
		case c.state.Load() == callAbandoned:
			putCall(c) // its caller left before it was sent: drop it
			continue
		case c.ctx.Err() != nil:
			d.complete(c, nil, ctxErr(c.ctx))
			continue
		case !now.Before(c.deadline):
			d.complete(c, nil, errBackendTimeout)
			continue
		}
		if c.deadline.After(deadline) {
			deadline = c.deadline
		}
		live = append(live, &c.scriptCall)
		sent = append(sent, c)
	}
	if len(sent) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	d.flushN.Add(1)
	d.sentN.Add(int64(len(sent)))
	d.l.pipelined(ctx, live)
	cancel()
	for _, c := range sent {
		d.complete(c, c.reply, c.err)
	}
}

// complete hands the outcome to c's caller, or recycles c if the caller
// has left.
func (d *dispatcher) complete(c *call, reply []int64, err error) {
	c.reply, c.err = reply, err
	if c.state.CompareAndSwap(callPending, callCompleted) {
		c.done <- struct{}{}
		return
	}
	putCall(c)
}

// pipelined sends calls as one pipeline (go-redis splits it per node on a
// Cluster) and fills in each call's reply or error. Calls that failed with
// NOSCRIPT (the script cache was flushed, or a node restarted or failed
// over) are retried, and only they. The retry sends, per script, its first
// failed call as EVAL, which runs it and puts the script back in the cache,
// and the others as EVALSHA behind it on the same connection; on a Cluster
// the EVAL reaches one node only, so calls that still get NOSCRIPT go once
// more, each as EVAL. No SCRIPT LOAD is needed, so a Redis ACL user limited
// to EVAL and EVALSHA (see README) is enough.
func (l *Limiter) pipelined(ctx context.Context, calls []*scriptCall) {
	pipe := l.client.Pipeline()
	for _, c := range calls {
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx)
	var retry []*scriptCall
	for _, c := range calls {
		c.reply, c.err = c.cmd.Result()
		if c.err != nil && isNoScript(c.err) {
			retry = append(retry, c)
		}
	}
	if len(retry) == 0 {
		return
	}
	evals := map[*scriptCall]*redis.Cmd{}
	var loading []*redis.Script
	pipe = l.client.Pipeline()
	for _, c := range retry {
		if !slices.Contains(loading, c.script) {
			loading = append(loading, c.script)
			keys, args := splitScriptCmd(c.cmd)
			evals[c] = c.script.Eval(ctx, pipe, keys, args...)
			continue
		}
		c.cmd = redis.NewIntSliceCmd(ctx, c.cmd.Args()...)
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx)
	var again []*scriptCall
	for _, c := range retry {
		if ev, ok := evals[c]; ok {
			c.reply, c.err = ev.Int64Slice()
			continue
		}
		c.reply, c.err = c.cmd.Result()
		if c.err != nil && isNoScript(c.err) {
			again = append(again, c)
		}
	}
	if len(again) == 0 {
		return
	}
	pipe = l.client.Pipeline()
	last := make([]*redis.Cmd, len(again))
	for i, c := range again {
		keys, args := splitScriptCmd(c.cmd)
		last[i] = c.script.Eval(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range again {
		c.reply, c.err = last[i].Int64Slice()
	}
}
