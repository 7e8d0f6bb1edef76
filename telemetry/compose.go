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

// Filter returns a Subscriber that passes to sub only the events for which
// keep returns true, e.g. only denials:
//
//	telemetry.Filter(func(e ratelimit.Event) bool { return !e.Result.Allowed }, sub)
func Filter(keep func(ratelimit.Event) bool, sub ratelimit.Subscriber) ratelimit.Subscriber {
	return ratelimit.SubscriberFunc(func(ctx context.Context, e ratelimit.Event) {
		if keep(e) {
			sub.OnDecision(ctx, e)
		}
	})
}

// Recover returns a Subscriber that calls sub and, if sub panics, recovers
// and calls onPanic with the recovered value and the event instead of
// letting the panic reach the caller of Allow. The bus does not recover on
// its own: a panicking subscriber is a bug, and recovering costs a defer
// on every event. A nil onPanic just swallows the panic.
func Recover(sub ratelimit.Subscriber, onPanic func(recovered any, e ratelimit.Event)) ratelimit.Subscriber {
	return ratelimit.SubscriberFunc(func(ctx context.Context, e ratelimit.Event) {
		defer func() {
			if r := recover(); r != nil && onPanic != nil {
				onPanic(r, e)
			}
		}()
		sub.OnDecision(ctx, e)
	})
}
