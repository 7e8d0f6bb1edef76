package prom

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestRefundMetrics: refunds on a real Redis add what they gave back to
// ratelimit_cost_refunded_total (per quota for a MultiLimiter), failed ones
// count in ratelimit_refund_errors_total, and neither touches the decision,
// cost, duration or backend-error metrics.
func TestRefundMetrics(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	m := mustCollector(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	ctx := context.Background()
	l, err := ratelimit.New(c, ratelimit.PerMinute(1000), ratelimit.WithSubscribers(m), ratelimit.WithNamespace("llm"))
	if err != nil {
		t.Fatal(err)
	}
	multi, err := ratelimit.NewMulti(c, []ratelimit.Quota{
		{Name: "calls", Limit: ratelimit.PerMinute(10)},
		{Name: "tokens", Limit: ratelimit.PerHour(5000), Algorithm: ratelimit.FixedWindow},
	}, ratelimit.WithSubscribers(m), ratelimit.WithNamespace("gen"))
	if err != nil {
		t.Fatal(err)
	}
	spent, err := l.AllowN(ctx, "u", 800)
	if err != nil {
		t.Fatal(err)
	}
	for _, amount := range []int64{300, 150} {
		if _, err := l.Refund(ctx, "u", spent, amount); err != nil {
			t.Fatal(err)
		}
	}
	mspent, err := multi.AllowCosts(ctx, "u", 1, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := multi.Refund(ctx, "u", mspent, 0, 1200); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := l.Refund(ctx, "u", spent, 10); !errors.Is(err, ratelimit.ErrBackend) {
		t.Fatalf("refund with Redis down: %v", err)
	}
	expected := `
# HELP ratelimit_cost_refunded_total Cost units (tokens) given back by Refund: reserved by a decision, then not used.
# TYPE ratelimit_cost_refunded_total counter
ratelimit_cost_refunded_total{algorithm="fixed_window",namespace="gen"} 1200
ratelimit_cost_refunded_total{algorithm="token_bucket",namespace="llm"} 450
# HELP ratelimit_decisions_total Rate-limit decisions, by outcome: decision is allowed or blocked, reason is quota when Redis decided, shadow when shadow mode allowed what the quota would have blocked, and fail_open or fail_closed when Redis failed.
# TYPE ratelimit_decisions_total counter
ratelimit_decisions_total{algorithm="fixed_window",decision="allowed",namespace="gen",reason="quota"} 1
ratelimit_decisions_total{algorithm="fixed_window",decision="blocked",namespace="gen",reason="quota"} 0
ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="llm",reason="quota"} 1
ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="llm",reason="quota"} 0
# HELP ratelimit_cost_total Cost units (tokens) asked for in rate-limit decisions, by outcome: the cost granted is the allowed part.
# TYPE ratelimit_cost_total counter
ratelimit_cost_total{algorithm="fixed_window",decision="allowed",namespace="gen",reason="quota"} 2000
ratelimit_cost_total{algorithm="fixed_window",decision="blocked",namespace="gen",reason="quota"} 0
ratelimit_cost_total{algorithm="token_bucket",decision="allowed",namespace="llm",reason="quota"} 800
ratelimit_cost_total{algorithm="token_bucket",decision="blocked",namespace="llm",reason="quota"} 0
# HELP ratelimit_backend_errors_total Rate-limit decisions that Redis failed to make, by error type; the fail strategy decided them.
# TYPE ratelimit_backend_errors_total counter
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="canceled"} 0
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="circuit_open"} 0
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="connection"} 0
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="other"} 0
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="script"} 0
ratelimit_backend_errors_total{algorithm="fixed_window",namespace="gen",type="timeout"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="canceled"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="circuit_open"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="connection"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="other"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="script"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="llm",type="timeout"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), RefundedName, DecisionsName, CostName, BackendErrorsName); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.refundErr); got != 1 {
		t.Errorf("refund errors %v, want 1", got)
	}
	if counts := histogramCounts(t, reg); counts["llm"] != 1 || counts["gen"] != 1 {
		t.Errorf("histogram sample counts %v, want one decision each", counts)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
