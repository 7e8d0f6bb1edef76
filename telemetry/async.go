package telemetry

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// AsyncSubscriber delivers events to a slow subscriber on a goroutine of its
// own, through a bounded queue. When the queue is full an event is dropped,
// not waited for: a slow log sink must never slow down rate limiting. Drops
// are counted (Dropped) and can be passed to a subscriber of their own (see
// WithDropped), e.g. to export them as a metric.
//
// Create one with Async; call Close to drain it and stop its goroutine.
type AsyncSubscriber struct {
	next    ratelimit.Subscriber
	onDrop  ratelimit.Subscriber
	queue   chan queued
	done    chan struct{}
	mu      sync.RWMutex // write-locked only by Close, to close the queue safely
	closed  bool
	dropped atomic.Uint64
}

type queued struct {
	ctx    context.Context
	e      ratelimit.Event
	change *ratelimit.BreakerChange // a breaker change instead of e
	refund *ratelimit.RefundEvent   // a refund instead of e
}

// AsyncOption configures Async.
type AsyncOption func(*AsyncSubscriber)

// WithDropped passes every dropped event to s, synchronously, on the
// publishing goroutine; s must be cheap (a counter).
func WithDropped(s ratelimit.Subscriber) AsyncOption {
	return func(a *AsyncSubscriber) { a.onDrop = s }
}

// Async starts a goroutine that delivers events to sub in order, with a
// queue of size events (at least 1); a nil sub discards them. The ctx sub
// receives is the caller's, possibly canceled by then; sub must not rely on
// it being live.
func Async(sub ratelimit.Subscriber, size int, opts ...AsyncOption) *AsyncSubscriber {
	if size < 1 {
		size = 1
	}
	if sub == nil {
		sub = discard{} // rather than a panic on the delivering goroutine
	}
	a := &AsyncSubscriber{next: sub, queue: make(chan queued, size), done: make(chan struct{})}
	for _, o := range opts {
		o(a)
	}
	go a.run()
	return a
}

func (a *AsyncSubscriber) run() {
	defer close(a.done)
	for q := range a.queue {
		if q.change != nil {
			forwardBreaker(q.ctx, a.next, *q.change)
			continue
		}
		if q.refund != nil {
			forwardRefund(q.ctx, a.next, *q.refund)
			continue
		}
		a.next.OnDecision(q.ctx, q.e)
	}
}

// OnDecision queues e, or drops it when the queue is full or the subscriber
// is closed.
func (a *AsyncSubscriber) OnDecision(ctx context.Context, e ratelimit.Event) {
	a.mu.RLock()
	if !a.closed {
		select {
		case a.queue <- queued{ctx: ctx, e: e}:
			a.mu.RUnlock()
			return
		default:
		}
	}
	a.mu.RUnlock()
	a.dropped.Add(1)
	if a.onDrop != nil {
		a.onDrop.OnDecision(ctx, e)
	}
}

// OnBreakerChange queues a circuit breaker change for sub, in order with
// the events, when sub is a ratelimit.BreakerSubscriber. A change that
// finds the queue full is dropped and counted in Dropped (it is not passed
// to WithDropped's subscriber, which counts events).
func (a *AsyncSubscriber) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	if _, ok := a.next.(ratelimit.BreakerSubscriber); !ok {
		return
	}
	a.enqueue(queued{ctx: ctx, change: &c})
}

// OnRefundEvent queues a refund for sub, in order with the events, when sub
// is a ratelimit.RefundSubscriber. A refund that finds the queue full is
// dropped and counted in Dropped (it is not passed to WithDropped's
// subscriber, which counts decisions).
func (a *AsyncSubscriber) OnRefundEvent(ctx context.Context, r ratelimit.RefundEvent) {
	if _, ok := a.next.(ratelimit.RefundSubscriber); !ok {
		return
	}
	a.enqueue(queued{ctx: ctx, refund: &r})
}

// enqueue queues q, or counts it dropped when the queue is full or closed.
func (a *AsyncSubscriber) enqueue(q queued) {
	a.mu.RLock()
	if !a.closed {
		select {
		case a.queue <- q:
			a.mu.RUnlock()
			return
		default:
		}
	}
	a.mu.RUnlock()
	a.dropped.Add(1)
}

// Dropped returns the number of events dropped so far.
func (a *AsyncSubscriber) Dropped() uint64 { return a.dropped.Load() }

// Close stops accepting events (later ones count as dropped), delivers
// those already queued, and waits for that to finish or for ctx to end,
// whichever comes first. It returns ctx's error in the latter case (the
// goroutine still finishes the queue). Close is idempotent.
func (a *AsyncSubscriber) Close(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	_ ratelimit.BreakerSubscriber = (*AsyncSubscriber)(nil)
	_ ratelimit.RefundSubscriber  = (*AsyncSubscriber)(nil)
)

// discard is a Subscriber that does nothing.
type discard struct{}

func (discard) OnDecision(context.Context, ratelimit.Event) {}
