package prom

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestCircuitMetrics runs a limiter with a circuit breaker against a real
// Redis that goes away and comes back: ratelimit_circuit_open follows the
// breaker (1 while it skips Redis, 0 once closed), every transition is
// counted by the state it went to, and the decisions the open breaker made
// are counted as fail_open with backend error type circuit_open but not
// observed in the duration histogram (no Redis call was timed).
func TestCircuitMetrics(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	m := mustCollector(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	br, err := ratelimit.NewBreaker(ratelimit.BreakerSettings{Failures: 2, CoolDown: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ratelimit.New(c, ratelimit.PerMinute(10), ratelimit.WithBreaker(br), ratelimit.WithSubscribers(m),
		ratelimit.WithNamespace("api"), ratelimit.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := l.Allow(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for range 2 + 3 { // two failures open it, three calls meet it open
		if _, err := l.Allow(ctx, "u"); !errors.Is(err, ratelimit.ErrBackend) {
			t.Fatal(err)
		}
	}
	gauge := m.circuit.WithLabelValues("api", "token_bucket")
	to := func(state string) float64 {
		return testutil.ToFloat64(m.changes.WithLabelValues("api", "token_bucket", state))
	}
	if testutil.ToFloat64(gauge) != 1 || to("open") != 1 {
		t.Fatalf("open breaker: gauge %v, transitions to open %v", testutil.ToFloat64(gauge), to("open"))
	}
	expected := `
# HELP ratelimit_backend_errors_total Rate-limit decisions that Redis failed to make, by error type; the fail strategy decided them.
# TYPE ratelimit_backend_errors_total counter
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="canceled"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="circuit_open"} 3
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="connection"} 2
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="other"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="script"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="timeout"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), BackendErrorsName); err != nil {
		t.Fatal(err)
	}
	if counts := histogramCounts(t, reg); counts["api"] != 3 {
		t.Fatalf("histogram sample count %v, want 3 (the calls that reached for Redis)", counts)
	}

	// Redis is back: after the cool-down a probe closes the breaker.
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.Allow(ctx, "u"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the breaker did not close within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if testutil.ToFloat64(gauge) != 0 || to("closed") != 1 || to("half_open") != to("open") {
		t.Fatalf("closed again: gauge %v, transitions to open %v, half_open %v, closed %v",
			testutil.ToFloat64(gauge), to("open"), to("half_open"), to("closed"))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
