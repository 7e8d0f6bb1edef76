package ratelimit

import "context"

// The calls of the differential test whose shape changed with issue 11
// (Result.Time, Refund of a given spend), in one place, so that the test
// can run against the code before it by swapping this file alone (see the
// top of differential_test.go).

// diffResultTime returns the decision time of r in µs, and whether the API
// reports one.
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
