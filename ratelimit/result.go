package ratelimit

import "time"

// Reason says how a decision was reached.
type Reason uint8

const (
	// ReasonQuota: Redis decided, by the quota.
	ReasonQuota Reason = iota
	// ReasonFailOpen: Redis failed and FailOpen allowed the call.
	ReasonFailOpen
	// ReasonFailClosed: Redis failed and FailClosed denied the call.
	ReasonFailClosed
	// ReasonShadow: Redis decided that the quota denies the call, and shadow
	// mode (WithShadow) allowed it anyway. Allowed is true; Remaining and
	// RetryAfter are those of the denial.
	ReasonShadow
	// ReasonCanceled: the caller's context ended (canceled, or its deadline
	// passed) before Redis decided, and the call is denied whatever the
	// fail strategy: a caller that gave up is not a Redis outage, and must
	// not be let through by FailOpen.
	ReasonCanceled
	// ReasonCached: the quota denied the call, as this process remembers
	// from an earlier denial of the identity (WithDenyCache), without
	// asking Redis again.
	ReasonCached
)

var reasonNames = [...]string{"quota", "fail_open", "fail_closed", "shadow", "canceled", "cached"}

// String returns "quota", "fail_open", "fail_closed", "shadow",
// "canceled" or "cached": a bounded label.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Result is the outcome of one decision. It is a plain value; a denial is a
// Result with Allowed false, never an error.
//
// When Redis did not decide (Reason is ReasonFailOpen, ReasonFailClosed or
// ReasonCanceled) the state of the bucket is unknown: Remaining, RetryAfter
// and ResetAfter are 0, and Time is zero.
type Result struct {
	// Allowed reports whether the cost was granted.
	Allowed bool
	// Reason says whether Redis or the fail strategy decided.
	Reason Reason
	// Limit is the limit the decision was made against.
	Limit Limit
	// Remaining is the cost that could still be spent at once after this
	// decision (whole tokens, rounded down).
	Remaining int64
	// RetryAfter is, for a denial, how long until the same cost would be
	// allowed if nothing else is spent meanwhile. 0 when allowed, except
	// with ReasonShadow, where it is what the denial would have said. For a
	// ConcurrencyLimiter it is an upper bound: the time until enough leases
	// expire, sooner if they are released.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is fully replenished
	// (Remaining back to the burst) if nothing else is spent meanwhile.
	ResetAfter time.Duration
	// Quota is the name of the quota that decided, for a MultiLimiter (for
	// a Charger, the Name of the Charge): the one that denied (the longest
	// RetryAfter when several did), or when allowed the one with the
	// smallest share left. It is "" for the other limiters and for a fail
	// strategy's decision. Quota names come from the limiter's
	// configuration, so they are a bounded label.
	Quota string
	// Time is Redis's clock when the decision was made, to the
	// microsecond. Refund uses it to find what the call spent. It is zero
	// when Redis did not decide.
	Time time.Time

	shard int // the shard that decided (WithShards), 1 to n; 0 unsharded
}

// spent reports whether the call spent its cost in Redis: only an allowance
// by the quota does (a shadow pass, a denial or a fail strategy's decision
// spends nothing).
func (r Result) spent() bool { return r.Allowed && r.Reason == ReasonQuota && !r.Time.IsZero() }
