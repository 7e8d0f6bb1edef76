package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Refund gives amount units of cost back to identity, for a call that
// reserved more than it used: reserve the most an LLM request may spend
// (max_tokens) with AllowN, then refund what it did not use, passing the
// Result of that AllowN as spent:
//
//	res, err := lim.AllowN(ctx, id, maxTokens)
//	// ... the work, which used `used` tokens
//	lim.Refund(ctx, id, res, maxTokens-used)
//
// The units go back to what spent spent, never elsewhere, and never above a
// full burst (or quota), so a refund cannot grant more than the limit:
// TokenBucket adds the tokens back; FixedWindow takes them off the window
// spent was counted in, and SlidingWindow off the current or the previous
// window, whichever it was counted in (nothing once that window has
// passed); SlidingLog takes them off the log entries of spent (nothing once
// they left the window). amount should not exceed the cost of that call:
// more takes units off other calls decided in the same window (the same
// microsecond, for SlidingLog).
//
// A refund is applied exactly once: each carries an id that Redis
// remembers (for a minute, or ten backend timeouts if longer), so a refund
// sent again after its reply was lost (go-redis resends a call after a
// broken connection, within the backend timeout) gives nothing back the
// second time.
//
// When spent spent nothing (a denial, a shadow pass, a decision of the fail
// strategy or a canceled call: see Result.Time), there is nothing to give
// back: Refund returns a zero Result and a nil error without calling Redis
// or publishing anything.
//
// Otherwise the returned Result is the state after the refund, with Allowed
// true. A refund is not a decision and the fail strategy does not apply: on
// a Redis failure the error is a *BackendError and the Result is zero (the
// refund may or may not have happened; retrying it with a new call is
// safe only where giving back twice is). It is published on the bus as a
// RefundEvent, to the subscribers that implement RefundSubscriber (the
// prom, otel and slog subscribers do), so that cost metrics can count what
// was given back. An amount below zero or above the burst is an error
// wrapping ErrInvalidCost (not published); an amount of 0 changes nothing.
func (l *Limiter) Refund(ctx context.Context, identity string, spent Result, amount int64) (Result, error) {
	if amount < 0 || amount > l.limit.Capacity() {
		return Result{}, fmt.Errorf("%w: refund %d must be between 0 and the burst %d", ErrInvalidCost, amount, l.limit.Capacity())
	}
	var buf [1]string
	keys, err := l.keysOf(identity, &buf)
	if err != nil {
		return Result{}, err
	}
	if !spent.spent() {
		return Result{}, nil
	}
	i := 0
	if l.shards > 1 {
		if spent.shard < 1 || spent.shard > len(keys) {
			return Result{}, fmt.Errorf("%w: refund on %d shards of a Result that names shard %d: pass the Result this limiter's AllowN returned",
				ErrInvalidCost, len(keys), spent.shard)
		}
		i = spent.shard - 1
	}
	amount = min(amount, l.caps[i]) // a shard holds no more than its burst
	if l.e.denials != nil {
		l.e.denials.forget(keys[0])
	}
	start := l.e.startTimer()
	res, berr := l.run(ctx, l.decision(keys[i], i, amount, modeRefund,
		&refundArgs{key: newRefundKey(keys[i]), spentAt: spent.Time.UnixMicro(), keepMS: l.e.refundMemoryMS()}))
	if berr != nil {
		res = Result{}
	}
	res.shard = spent.shard
	l.e.publishRefund(ctx, l.alg, keys[i], amount, start, res, berr)
	if berr != nil {
		return Result{}, berr
	}
	return res, nil
}

// refundMemoryMS is how long Redis remembers a refund's id, so that the
// same refund sent again (a lost reply, the client's resend) is applied
// once: a minute, or ten backend timeouts if longer, far longer than a
// resend can take (go-redis resends within the call's context, which the
// backend timeout bounds), and short enough that the ids of a busy service
// take little memory.
func (e *engine) refundMemoryMS() int64 {
	return max(time.Minute, 10*e.cfg.timeout).Milliseconds()
}

// newRefundKey returns the key that makes one refund of key exactly-once:
// key + ":refund:" + 128 random bits in hex. It shares key's hash tag, so
// its Cluster slot.
func newRefundKey(key string) string {
	return key + refundSuffix + newID()
}

const refundSuffix = ":refund:"

// RefundEvent is cost given back by Refund (of a Limiter or a
// MultiLimiter) or by a Charger (RefundAll, and the refunds that undo a
// call denied across slots), published on the limiter's bus after the Redis call to
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
