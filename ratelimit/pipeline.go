package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The dispatcher shares round trips between the concurrent calls of one
// engine (WithPipelining). Calls that arrive while others are on the wire
// queue, and whatever is queued goes to Redis in one round trip as soon as
// a slot is free: the queued decisions as one decide.lua call per group
// (groupFunc), the other script calls beside them in the same pipeline.
// There is no timer: a call that finds a slot free and nothing queued goes
// out at once, alone, on the caller's goroutine (with a client that honours
// context deadlines). Under load the batches grow with the queue.
//
// A flusher goroutine runs while calls are queued and ends when the queue
// is empty; it never outlives its last round trip, which is bounded by the
// latest backend deadline of its calls (or the client's ReadTimeout, for a
// client that ignores deadlines). Each call leaves at its own backend
// timeout or when its context ends, whatever its batch does; a call whose
// caller left before it was sent is dropped from its batch.

const (
	// defaultPipelineConns is how many round trips one engine keeps in
	// flight at once: Redis works on one batch while the client reads the
	// previous one and builds the next.
	defaultPipelineConns = 2
	// maxPipelineBatch bounds the calls in one round trip.
	maxPipelineBatch = 512
)

// errBackendTimeout is what a queued call gets when its backend timeout
// passes before its reply came.
var errBackendTimeout = fmt.Errorf("ratelimit: no reply within the backend timeout: %w", context.DeadlineExceeded)

// Call states: who owns a queued call. The caller and the flusher each
// move a pending call on with one compare-and-swap; whoever loses knows the
// other side owns it.
const (
	callPending   uint32 = iota
	callCompleted        // the flusher filled in the outcome and signalled done
	callAbandoned        // the caller left (canceled or timed out); the flusher recycles it
)

// call is one queued call: a decision or a script call of its own.
type call struct {
	d        *decision
	s        *scriptCall
	err      error           // the round trip's own failure, if any
	ctx      context.Context // the caller's, read by the flusher for Err only
	deadline time.Time
	state    atomic.Uint32
	done     chan struct{} // buffered: completing never blocks
	timer    *time.Timer   // the backend timeout, reused with the call
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func putCall(c *call) {
	c.d, c.s, c.err, c.ctx = nil, nil, nil, nil
	c.state.Store(callPending)
	callPool.Put(c)
}

// dispatcher batches the concurrent calls of one engine.
type dispatcher struct {
	e        *engine
	maxConns int
	maxBatch int

	mu     sync.Mutex
	queue  []*call
	active int          // slots taken: lone calls and flushers in flight
	spare  [][]*call    // batch buffers of finished flushers, for reuse
	flushN atomic.Int64 // round trips of queued calls (for tests)
	sentN  atomic.Int64 // calls sent in them
}

func newDispatcher(e *engine) *dispatcher {
	return &dispatcher{e: e, maxConns: defaultPipelineConns, maxBatch: maxPipelineBatch}
}

// do runs the decision d or the script call s through the dispatcher and
// returns its error, of the call itself or of its round trip. Neither is
// retained once do returns.
func (p *dispatcher) do(ctx context.Context, d *decision, s *scriptCall) *BackendError {
	now := time.Now()
	deadline := now.Add(p.e.cfg.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}

	p.mu.Lock()
	if p.active < p.maxConns && len(p.queue) == 0 && p.e.direct {
		// A free slot and nobody waiting: go out at once, on this
		// goroutine, alone.
		p.active++
		p.mu.Unlock()
		defer p.release()
		var scs []*scriptCall
		if s != nil {
			scs = []*scriptCall{s}
		}
		if err := p.e.roundTrip(ctx, d, nil, scs); err != nil {
			return err
		}
		return outcomeErr(d, s, nil)
	}
	c := callPool.Get().(*call)
	c.d, c.s, c.ctx, c.deadline = d, s, ctx, deadline
	p.queue = append(p.queue, c)
	var batch []*call
	if p.active < p.maxConns {
		p.active++
		batch = p.takeLocked(nil)
	}
	p.mu.Unlock()
	if batch != nil {
		go p.flush(batch)
	}
	return p.wait(ctx, c, deadline.Sub(now))
}

// outcomeErr returns the error of a call that came back: its round trip's
// (roundTrip), else the call's own.
func outcomeErr(d *decision, s *scriptCall, roundTrip error) *BackendError {
	err := roundTrip
	if err == nil && d != nil {
		err = d.err
	}
	if err == nil && s != nil {
		err = s.err
	}
	if err != nil {
		return newBackendError(err)
	}
	return nil
}

// wait blocks until c is completed, ctx ends or the backend timeout passes.
func (p *dispatcher) wait(ctx context.Context, c *call, timeout time.Duration) *BackendError {
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
			return newBackendError(ctxErr(ctx))
		}
		<-c.done // completed meanwhile: take the reply
	case <-c.timer.C:
		if c.state.CompareAndSwap(callPending, callAbandoned) {
			return newBackendError(errBackendTimeout)
		}
		<-c.done
	}
	err := outcomeErr(c.d, c.s, c.err)
	putCall(c)
	return err
}

// stopTimer stops t and drains a tick it may have sent meanwhile, so that
// the pooled call's next wait does not see a stale timeout (for programs
// still run with GODEBUG=asynctimerchan=1).
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
func (p *dispatcher) release() {
	p.mu.Lock()
	if len(p.queue) == 0 {
		p.active--
		p.mu.Unlock()
		return
	}
	batch := p.takeLocked(nil)
	p.mu.Unlock()
	go p.flush(batch)
}

// takeLocked moves up to maxBatch queued calls into dst (or a spare
// buffer), oldest first.
func (p *dispatcher) takeLocked(dst []*call) []*call {
	if dst == nil {
		if n := len(p.spare); n > 0 {
			dst, p.spare = p.spare[n-1], p.spare[:n-1]
		} else {
			dst = make([]*call, 0, min(len(p.queue), p.maxBatch))
		}
	}
	n := min(len(p.queue), p.maxBatch)
	dst = append(dst[:0], p.queue[:n]...)
	rest := copy(p.queue, p.queue[n:])
	clear(p.queue[rest:])
	p.queue = p.queue[:rest]
	return dst
}

// flush sends batch, then whatever queued meanwhile, until the queue is
// empty; then it gives its slot back and ends.
func (p *dispatcher) flush(batch []*call) {
	for {
		p.run(batch)
		clear(batch)
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.active--
			p.spare = append(p.spare, batch[:0])
			p.mu.Unlock()
			return
		}
		batch = p.takeLocked(batch)
		p.mu.Unlock()
	}
}

// run sends one batch in one round trip and completes each of its calls.
func (p *dispatcher) run(batch []*call) {
	now := time.Now()
	var (
		deadline time.Time
		ds       []*decision
		scs      []*scriptCall
	)
	sent := batch[:0]
	for _, c := range batch {
		switch {
		case c.state.Load() == callAbandoned:
			putCall(c) // its caller left before it was sent: drop it
			continue
		case c.ctx.Err() != nil:
			p.complete(c, ctxErr(c.ctx))
			continue
		case !now.Before(c.deadline):
			p.complete(c, errBackendTimeout)
			continue
		}
		if c.deadline.After(deadline) {
			deadline = c.deadline
		}
		if c.d != nil {
			ds = append(ds, c.d)
		} else {
			scs = append(scs, c.s)
		}
		sent = append(sent, c)
	}
	if len(sent) == 0 {
		return
	}
	// The round trip runs under a context of its own, without the callers'
	// values or cancellation, until the latest deadline of its calls.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	p.flushN.Add(1)
	p.sentN.Add(int64(len(sent)))
	p.e.send(ctx, ds, scs)
	cancel()
	for _, c := range sent {
		p.complete(c, nil)
	}
}

// complete hands the outcome to c's caller, or recycles c if the caller
// has left.
func (p *dispatcher) complete(c *call, err error) {
	c.err = err
	if c.state.CompareAndSwap(callPending, callCompleted) {
		c.done <- struct{}{}
		return
	}
	putCall(c)
}
