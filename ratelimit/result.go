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
)

var reasonNames = [...]string{"quota", "fail_open", "fail_closed"}

// String returns "quota", "fail_open" or "fail_closed": a bounded label.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Result is the outcome of one decision. It is a plain value; a denial is a
// Result with Allowed false, never an error.
//
// When Redis failed (Reason is ReasonFailOpen or ReasonFailClosed) the state
// of the bucket is unknown: Remaining, RetryAfter and ResetAfter are 0.
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
	// allowed if nothing else is spent meanwhile. 0 when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is fully replenished
	// (Remaining back to the burst) if nothing else is spent meanwhile.
	ResetAfter time.Duration
}

// FailedOpen reports whether the call was allowed only because Redis failed.
func (r Result) FailedOpen() bool { return r.Reason == ReasonFailOpen }
