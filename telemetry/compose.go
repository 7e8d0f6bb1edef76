package telemetry

import (
	"context"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Fanout returns a Subscriber that passes each event to every one of subs,
// in order. Nil subscribers are dropped and nested Fanouts flattened.
func Fanout(subs ...ratelimit.Subscriber) ratelimit.Subscriber {
	var flat fanout
	for _, s := range subs {
		switch s := s.(type) {
		case nil:
		case fanout:
			flat = append(flat, s...)
		default:
			flat = append(flat, s)
		}
	}
	return flat
}

type fanout []ratelimit.Subscriber

func (f fanout) OnDecision(ctx context.Context, e ratelimit.Event) {
	for _, s := range f {
		s.OnDecision(ctx, e)
	}
}

// OnBreakerChange passes c to every member that is a
// ratelimit.BreakerSubscriber.
func (f fanout) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	for _, s := range f {
		forwardBreaker(ctx, s, c)
	}
}

// OnRefundEvent passes r to every member that is a
// ratelimit.RefundSubscriber.
func (f fanout) OnRefundEvent(ctx context.Context, r ratelimit.RefundEvent) {
	for _, s := range f {
		forwardRefund(ctx, s, r)
	}
}

// forwardRefund passes a refund to sub when it wants them.
func forwardRefund(ctx context.Context, sub ratelimit.Subscriber, r ratelimit.RefundEvent) {
	if rs, ok := sub.(ratelimit.RefundSubscriber); ok {
		rs.OnRefundEvent(ctx, r)
	}
}

// forwardBreaker passes a circuit breaker change to sub when it wants
// them.
func forwardBreaker(ctx context.Context, sub ratelimit.Subscriber, c ratelimit.BreakerChange) {
	if bs, ok := sub.(ratelimit.BreakerSubscriber); ok {
		bs.OnBreakerChange(ctx, c)
	}
}

// Filter returns a Subscriber that passes to sub only the events for which
// keep returns true, e.g. only denials:
//
//	telemetry.Filter(func(e ratelimit.Event) bool { return !e.Result.Allowed }, sub)
//
// Circuit breaker changes (ratelimit.BreakerSubscriber) and refunds
// (ratelimit.RefundSubscriber) are not decisions and pass unfiltered. A nil
// keep keeps everything; a nil sub receives nothing.
func Filter(keep func(ratelimit.Event) bool, sub ratelimit.Subscriber) ratelimit.Subscriber {
	switch {
	case sub == nil:
		return discard{}
	case keep == nil:
		return sub
	}
	return filter{keep, sub}
}

type filter struct {
	keep func(ratelimit.Event) bool
	sub  ratelimit.Subscriber
}

func (f filter) OnDecision(ctx context.Context, e ratelimit.Event) {
	if f.keep(e) {
		f.sub.OnDecision(ctx, e)
	}
}

func (f filter) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	forwardBreaker(ctx, f.sub, c)
}

func (f filter) OnRefundEvent(ctx context.Context, r ratelimit.RefundEvent) {
	forwardRefund(ctx, f.sub, r)
}

// Recover returns a Subscriber that calls sub and, if sub panics, recovers
// and calls onPanic with the recovered value and the event instead of
// letting the panic reach the caller of Allow. The bus does not recover on
// its own: a panicking subscriber is a bug, and recovering costs a defer
// on every event. A nil onPanic just swallows the panic.
//
// Circuit breaker changes and refunds pass to sub too; a panic there is
// swallowed (there is no decision Event to hand onPanic).
func Recover(sub ratelimit.Subscriber, onPanic func(recovered any, e ratelimit.Event)) ratelimit.Subscriber {
	return recoverer{sub, onPanic}
}

type recoverer struct {
	sub     ratelimit.Subscriber
	onPanic func(recovered any, e ratelimit.Event)
}

func (r recoverer) OnDecision(ctx context.Context, e ratelimit.Event) {
	defer func() {
		if v := recover(); v != nil && r.onPanic != nil {
			r.onPanic(v, e)
		}
	}()
	r.sub.OnDecision(ctx, e)
}

func (r recoverer) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	defer func() { _ = recover() }()
	forwardBreaker(ctx, r.sub, c)
}

func (r recoverer) OnRefundEvent(ctx context.Context, e ratelimit.RefundEvent) {
	defer func() { _ = recover() }()
	forwardRefund(ctx, r.sub, e)
}

var (
	_ ratelimit.BreakerSubscriber = fanout(nil)
	_ ratelimit.BreakerSubscriber = filter{}
	_ ratelimit.BreakerSubscriber = recoverer{}
	_ ratelimit.RefundSubscriber  = fanout(nil)
	_ ratelimit.RefundSubscriber  = filter{}
	_ ratelimit.RefundSubscriber  = recoverer{}
)
