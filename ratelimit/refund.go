package ratelimit

import (
	"context"
	"fmt"
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
// refund is not a decision: it is not published on the bus, and the fail
// strategy does not apply: on a Redis failure the error is a *BackendError
// and the Result is zero. An amount below zero or above the burst is an error
// wrapping ErrInvalidCost; an amount of 0 changes nothing.
func (l *Limiter) Refund(ctx context.Context, identity string, amount int64) (Result, error) {
	if amount < 0 || amount > l.pol.capacity {
		return Result{}, fmt.Errorf("%w: refund %d must be between 0 and the burst %d", ErrInvalidCost, amount, l.pol.capacity)
	}
	key, err := l.keys.key(identity)
	if err != nil {
		return Result{}, err
	}
	res, berr := l.eval(ctx, key, amount, modeRefund)
	if berr != nil {
		return Result{}, berr
	}
	return res, nil
}
