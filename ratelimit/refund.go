package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Refund gives amount units of cost back to identity, for a call that
// reserved more than it used: reserve the most an LLM request may spend
// (max_tokens) with AllowN, then refund what it did not use. Refund never
// raises the remaining cost above a full burst (or quota), so it cannot grant
// more than the limit.
//
// Per algorithm: TokenBucket adds the tokens back; FixedWindow takes them off
// the current window's count (a reservation made in an earlier window has
// already been forgotten, and a refund cannot go below zero spent);
// SlidingWindow takes them off the current window, then the previous one;
// SlidingLog takes them off its newest entries.
//
// The returned Result is the state after the refund, with Allowed true. A
// refund is not a decision and the fail strategy does not apply: on a Redis
// failure the error is a *BackendError and the Result is zero. It is
// published on the bus as a RefundEvent, to the subscribers that implement
// RefundSubscriber (the prom, otel and slog subscribers do), so that cost
// metrics can count what was given back. An amount below zero or above the
// burst is an error wrapping ErrInvalidCost (not published); an amount of 0
// changes nothing.
func (l *Limiter) Refund(ctx context.Context, identity string, amount int64) (Result, error) {
	if amount < 0 || amount > l.pol.capacity {
		return Result{}, fmt.Errorf("%w: refund %d must be between 0 and the burst %d", ErrInvalidCost, amount, l.pol.capacity)
	}
	key, err := l.keys.key(identity)
	if err != nil {
		return Result{}, err
	}
	publish := l.bus.Enabled()
	var start time.Time
	if publish {
		start = time.Now()
	}
	res, berr := l.eval(ctx, key, amount, modeRefund)
	if berr != nil {
		res = Result{}
	}
	if publish {
		l.publishRefund(ctx, l.cfg.algorithm, key, amount, res, start, berr)
	}
	if berr != nil {
		return Result{}, berr
	}
	return res, nil
}

// RefundEvent is cost given back by Refund (of a Limiter or a
// MultiLimiter), published on the limiter's bus after the Redis call to
// the subscribers that implement RefundSubscriber. A refund is not a
// decision: a subscriber that implements only Subscriber never sees it.
type RefundEvent struct {
	// Namespace, Algorithm and Key are as in Event. A MultiLimiter's
	// Refund publishes one RefundEvent per quota with a non-zero amount,
	// with the quota's.
	Namespace string
	Algorithm Algorithm
	Key       string
	// Amount is the cost given back (to that quota, for a MultiLimiter).
	// The state never goes above a full burst: when less than Amount was
	// spent, less comes back.
	Amount int64
	// Result is the state after the refund (Remaining; Allowed is true;
	// the quota's own, for a MultiLimiter), zero when Err is set.
	Result Result
	// Start, Duration, Err and ServerAddr are as in Event: the Redis call,
	// and its *BackendError when it failed (the refund then did not
	// happen, or its reply was lost).
	Start      time.Time
	Duration   time.Duration
	Err        error
	ServerAddr string
}

// A RefundSubscriber is a Subscriber that also wants refunds. The Bus finds
// it by type assertion, as for BreakerSubscriber. OnRefundEvent is called
// synchronously, on the goroutine that called Refund; like OnDecision it
// must be fast and must not call the limiter.
type RefundSubscriber interface {
	Subscriber
	OnRefundEvent(ctx context.Context, r RefundEvent)
}

// publishRefund sends one refund to the bus; start is when its Redis call
// began.
func (l *Limiter) publishRefund(ctx context.Context, alg Algorithm, key string, amount int64, res Result, start time.Time, err *BackendError) {
	r := RefundEvent{
		Namespace:  l.cfg.namespace,
		Algorithm:  alg,
		Key:        key,
		Amount:     amount,
		Result:     res,
		ServerAddr: l.server,
	}
	r.Start, r.Duration, r.Err = callTiming(start, err)
	l.bus.PublishRefund(ctx, r)
}
