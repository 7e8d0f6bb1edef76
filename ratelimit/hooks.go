package ratelimit

import "context"

// Hooks is a Subscriber made of optional callbacks, for allowed, blocked
// and failed decisions, the state changes of a circuit breaker
// (WithBreaker), and refunds. Nil fields are skipped. Subscribe it like any other Subscriber:
//
//	ratelimit.WithSubscribers(ratelimit.Hooks{OnBlock: func(ctx context.Context, e ratelimit.Event) { ... }})
type Hooks struct {
	// OnAllow is called for every allowed decision, including those
	// allowed by FailOpen (after OnError).
	OnAllow func(ctx context.Context, e Event)
	// OnBlock is called for every denied decision, including those denied
	// by FailClosed (after OnError).
	OnBlock func(ctx context.Context, e Event)
	// OnError is called when Redis failed; e.Err holds the *BackendError.
	OnError func(ctx context.Context, e Event)
	// OnBreaker is called when the limiter's circuit breaker changes
	// state.
	OnBreaker func(ctx context.Context, c BreakerChange)
	// OnRefund is called after every Refund that was not rejected as bad
	// input, also a failed one (r.Err, which may be an open circuit
	// breaker's).
	OnRefund func(ctx context.Context, r RefundEvent)
}

// OnDecision implements Subscriber.
func (h Hooks) OnDecision(ctx context.Context, e Event) {
	if e.Err != nil && h.OnError != nil {
		h.OnError(ctx, e)
	}
	if e.Result.Allowed {
		if h.OnAllow != nil {
			h.OnAllow(ctx, e)
		}
	} else if h.OnBlock != nil {
		h.OnBlock(ctx, e)
	}
}

// OnBreakerChange implements BreakerSubscriber.
func (h Hooks) OnBreakerChange(ctx context.Context, c BreakerChange) {
	if h.OnBreaker != nil {
		h.OnBreaker(ctx, c)
	}
}

// OnRefundEvent implements RefundSubscriber.
func (h Hooks) OnRefundEvent(ctx context.Context, r RefundEvent) {
	if h.OnRefund != nil {
		h.OnRefund(ctx, r)
	}
}

var (
	_ BreakerSubscriber = Hooks{}
	_ RefundSubscriber  = Hooks{}
)
