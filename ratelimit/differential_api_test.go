package ratelimit

import (
	"context"

	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// What the differential test needs of the API that changed with issue 11
// (Result.Time, Refund of a given spend, ReasonCanceled) and of the scripts'
// packaging, in one place: the test runs against the code before issue 11
// by swapping this file alone (see the top of differential_test.go).

// diffScripts are the library's scripts, which the proxy knows how to wrap.
var diffScripts = []string{lua.Decide(), lua.Multi(), lua.Concurrency()}

// diffFunctions are the library's functions libraries, by the FCALL name
// of their function, which the proxy knows how to wrap (none before the
// functions library).
var diffFunctions = map[string]string{lua.DecideFunction(): lua.Library()}

// diffReasonCanceled is the Reason of a decision whose caller's context
// ended before Redis decided.
const diffReasonCanceled = ReasonCanceled

// diffResultTime returns the decision time of r in µs (0 for none), and
// whether the API reports one.
func diffResultTime(r Result) (int64, bool) {
	if r.Time.IsZero() {
		return 0, true
	}
	return r.Time.UnixMicro(), true
}

// diffRefund refunds amount of the spend that spent made.
func diffRefund(ctx context.Context, l *Limiter, identity string, spent Result, amount int64) (Result, error) {
	return l.Refund(ctx, identity, spent, amount)
}

func diffMultiRefund(ctx context.Context, m *MultiLimiter, identity string, spent MultiResult, amounts []int64) (MultiResult, error) {
	return m.Refund(ctx, identity, spent, amounts...)
}
