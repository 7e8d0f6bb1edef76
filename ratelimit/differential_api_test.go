package ratelimit

import "context"

// The calls of the differential test whose shape changed with issue 11
// (Result.Time, Refund of a given spend), in one place, so that the test
// can run against the code before it by swapping this file alone.

// diffResultTime returns the decision time of r in µs, and whether the API
// reports one.
func diffResultTime(r Result) (int64, bool) { return 0, false }

// diffRefund refunds amount of the spend that spent made. The API before
// issue 11 takes no spend: a spend that did not happen in Redis is skipped
// here, as Refund now does itself.
func diffRefund(ctx context.Context, l *Limiter, identity string, spent Result, amount int64) (Result, error) {
	if !spent.Allowed || spent.Reason != ReasonQuota {
		return Result{}, nil
	}
	return l.Refund(ctx, identity, amount)
}

func diffMultiRefund(ctx context.Context, m *MultiLimiter, identity string, spent MultiResult, amounts []int64) (MultiResult, error) {
	if !spent.Allowed || spent.Reason != ReasonQuota {
		return MultiResult{}, nil
	}
	return m.Refund(ctx, identity, amounts...)
}
