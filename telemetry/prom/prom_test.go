package prom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/testkit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

func mustCollector(t testing.TB, opts ...Option) *Collector {
	t.Helper()
	c, err := NewCollector(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBadOptions(t *testing.T) {
	for name, opts := range map[string][]Option{
		"unsorted buckets": {WithBuckets(0.01, 0.001)},
		"repeated bucket":  {WithBuckets(0.001, 0.001)},
		"NaN bucket":       {WithBuckets(math.NaN())},
		"bad label name":   {WithConstLabels(prometheus.Labels{"\xff": "x"})},
		"clashing label":   {WithConstLabels(prometheus.Labels{labelNamespace: "x"})},
	} {
		c, err := NewCollector(opts...)
		if !errors.Is(err, ratelimit.ErrInvalidOption) || c != nil || !strings.HasPrefix(err.Error(), "ratelimit: ") {
			t.Errorf("%s: %v, %v; want an ErrInvalidOption", name, c, err)
		}
	}
	if _, err := NewCollector(WithBuckets(), nil, WithConstLabels(prometheus.Labels{"service": "shop"})); err != nil {
		t.Errorf("good options: %v", err)
	}
}

// newLimiter returns a limiter on a fresh miniredis, and the miniredis.
func newLimiter(t *testing.T, lim ratelimit.Limit, opts ...ratelimit.Option) (*ratelimit.Limiter, *miniredis.Miniredis) {
	return testkit.MiniLimiter(t, lim, opts...)
}

// sampledCtx returns a context holding a sampled remote span, as an HTTP
// server's tracing middleware would leave it.
func sampledCtx(traceHex, spanHex string) context.Context {
	tid, err := trace.TraceIDFromHex(traceHex)
	if err != nil {
		panic(err)
	}
	sid, err := trace.SpanIDFromHex(spanHex)
	if err != nil {
		panic(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

const (
	traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
	spanHex  = "00f067aa0ba902b7"
)

// TestScriptedDecisions runs a known sequence of decisions through real
// limiters (on miniredis, including a real connection failure) and
// compares every counter exactly.
func TestScriptedDecisions(t *testing.T) {
	m := mustCollector(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	// Drops, through a real Async: after Close every event is dropped.
	ctx := context.Background()
	async := telemetry.Async(ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) {}), 1,
		telemetry.WithDropped(m.Dropped("slog")))
	if err := async.Close(ctx); err != nil {
		t.Fatal(err)
	}
	bus := ratelimit.NewBus()
	bus.Subscribe(m)
	api, _ := newLimiter(t, ratelimit.PerSecond(10).WithBurst(3), ratelimit.WithNamespace("api"), ratelimit.WithBus(bus))
	const id = "alice@example.com"
	want := []bool{true, true, false, true, false} // costs 1, 2, 1, 0, 3 on a burst of 3
	for i, cost := range []int64{1, 2, 1, 0, 3} {
		res, err := api.AllowN(ctx, id, cost)
		if err != nil || res.Allowed != want[i] {
			t.Fatalf("call %d (cost %d): %+v, %v; want allowed=%v", i, cost, res, err, want[i])
		}
	}

	// A Redis that is gone: one fail-open and one fail-closed decision.
	open, mr := newLimiter(t, ratelimit.PerSecond(2), ratelimit.WithNamespace("auth"), ratelimit.WithSubscribers(m))
	closedC := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer closedC.Close()
	closed, err := ratelimit.New(closedC, ratelimit.PerSecond(1), ratelimit.WithNamespace("auth"),
		ratelimit.WithFailStrategy(ratelimit.FailClosed), ratelimit.WithSubscribers(m))
	if err != nil {
		t.Fatal(err)
	}
	mr.Close()
	if res, err := open.AllowN(ctx, id, 2); !errors.Is(err, ratelimit.ErrBackend) || !res.Allowed {
		t.Fatalf("fail open: %+v, %v", res, err)
	}
	if res, err := closed.Allow(ctx, id); !errors.Is(err, ratelimit.ErrBackend) || res.Allowed {
		t.Fatalf("fail closed: %+v, %v", res, err)
	}
	// A synthetic timeout, as a stalled Redis would give.
	m.OnDecision(ctx, ratelimit.Event{
		Namespace: "auth", Algorithm: ratelimit.TokenBucket, Cost: 1,
		Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen},
		Start:  time.Now(), Duration: 100 * time.Millisecond,
		Err: &ratelimit.BackendError{Type: ratelimit.ErrorTimeout, Err: context.DeadlineExceeded},
	})

	unsubscribe := bus.Subscribe(async)
	defer unsubscribe()
	if _, err := api.Allow(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	if strings.Contains(gatherText(t, reg), "alice") {
		t.Fatal("an identity reached the metrics")
	}
	expected := `
# HELP ratelimit_decisions_total Rate-limit decisions, by outcome: decision is allowed or blocked, reason is quota when Redis decided, shadow when shadow mode allowed what the quota would have blocked, and fail_open or fail_closed when Redis failed.
# TYPE ratelimit_decisions_total counter
ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="api",reason="quota"} 4
ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="api",reason="quota"} 2
ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="auth",reason="quota"} 0
ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="auth",reason="quota"} 0
ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="auth",reason="fail_open"} 2
ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="auth",reason="fail_closed"} 1
# HELP ratelimit_cost_total Cost units (tokens) asked for in rate-limit decisions, by outcome: the cost granted is the allowed part.
# TYPE ratelimit_cost_total counter
ratelimit_cost_total{algorithm="token_bucket",decision="allowed",namespace="api",reason="quota"} 4
ratelimit_cost_total{algorithm="token_bucket",decision="blocked",namespace="api",reason="quota"} 4
ratelimit_cost_total{algorithm="token_bucket",decision="allowed",namespace="auth",reason="quota"} 0
ratelimit_cost_total{algorithm="token_bucket",decision="blocked",namespace="auth",reason="quota"} 0
ratelimit_cost_total{algorithm="token_bucket",decision="allowed",namespace="auth",reason="fail_open"} 3
ratelimit_cost_total{algorithm="token_bucket",decision="blocked",namespace="auth",reason="fail_closed"} 1
# HELP ratelimit_backend_errors_total Rate-limit decisions that Redis failed to make, by error type; the fail strategy decided them.
# TYPE ratelimit_backend_errors_total counter
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="canceled"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="circuit_open"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="connection"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="other"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="script"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="timeout"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="canceled"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="circuit_open"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="connection"} 2
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="other"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="script"} 0
ratelimit_backend_errors_total{algorithm="token_bucket",namespace="auth",type="timeout"} 1
# HELP ratelimit_events_dropped_total Rate-limit events an asynchronous subscriber dropped because its queue was full or it was closed.
# TYPE ratelimit_events_dropped_total counter
ratelimit_events_dropped_total{algorithm="token_bucket",namespace="api",subscriber="slog"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		DecisionsName, CostName, BackendErrorsName, DroppedName); err != nil {
		t.Fatal(err)
	}
	// Every decision was timed: 6 on api, 3 on auth.
	counts := histogramCounts(t, reg)
	if counts["api"] != 6 || counts["auth"] != 3 {
		t.Fatalf("histogram sample counts %v, want api 6, auth 3", counts)
	}
}

// TestDurationHistogram compares the histogram exactly, buckets, sum and
// count, after synthetic events of known durations.
func TestDurationHistogram(t *testing.T) {
	m := mustCollector(t, WithBuckets(0.0001, 0.001, 0.01))
	ev := func(d time.Duration) ratelimit.Event {
		return ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true}, Start: time.Unix(1, 0), Duration: d}
	}
	ctx := context.Background()
	for _, d := range []time.Duration{50 * time.Microsecond, 75 * time.Microsecond, 500 * time.Microsecond, 2 * time.Millisecond, time.Second} {
		m.OnDecision(ctx, ev(d))
	}
	// Not timed: not observed.
	m.OnDecision(ctx, ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	expected := `
# HELP ratelimit_backend_duration_seconds Duration of the Redis round trip of a rate-limit decision, failed ones included.
# TYPE ratelimit_backend_duration_seconds histogram
ratelimit_backend_duration_seconds_bucket{algorithm="token_bucket",namespace="api",le="0.0001"} 2
ratelimit_backend_duration_seconds_bucket{algorithm="token_bucket",namespace="api",le="0.001"} 3
ratelimit_backend_duration_seconds_bucket{algorithm="token_bucket",namespace="api",le="0.01"} 4
ratelimit_backend_duration_seconds_bucket{algorithm="token_bucket",namespace="api",le="+Inf"} 5
ratelimit_backend_duration_seconds_sum{algorithm="token_bucket",namespace="api"} 1.002625
ratelimit_backend_duration_seconds_count{algorithm="token_bucket",namespace="api"} 5
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(expected), BackendDurationName); err != nil {
		t.Fatal(err)
	}
	// The native histogram is there too.
	h := gatherHistogram(t, m)
	if h.GetSchema() != 3 || len(h.GetPositiveSpan()) == 0 {
		t.Fatalf("no native histogram: schema %d, spans %v", h.GetSchema(), h.GetPositiveSpan())
	}
}

func TestExemplar(t *testing.T) {
	m := mustCollector(t)
	ev := ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true}, Start: time.Unix(1, 0), Duration: 40 * time.Microsecond}
	m.OnDecision(sampledCtx(traceHex, spanHex), ev)
	h := gatherHistogram(t, m)
	var got []*dto.Exemplar
	for _, b := range h.GetBucket() {
		if b.GetExemplar() != nil {
			got = append(got, b.GetExemplar())
		}
	}
	got = append(got, h.GetExemplars()...) // native exemplars
	if len(got) != 2 {
		t.Fatalf("%d exemplars, want one classic and one native: %v", len(got), got)
	}
	for _, e := range got {
		labels := map[string]string{}
		for _, l := range e.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["trace_id"] != traceHex || labels["span_id"] != spanHex || e.GetValue() != 40e-6 {
			t.Errorf("exemplar %v", e)
		}
	}

	// An unsampled span, or exemplars off: none.
	for name, tc := range map[string]struct {
		c   *Collector
		ctx context.Context
	}{
		"unsampled": {mustCollector(t), trace.ContextWithSpanContext(context.Background(),
			trace.SpanContextFromContext(sampledCtx(traceHex, spanHex)).WithTraceFlags(0))},
		"off": {mustCollector(t, WithExemplars(false)), sampledCtx(traceHex, spanHex)},
	} {
		tc.c.OnDecision(tc.ctx, ev)
		h := gatherHistogram(t, tc.c)
		if h.GetSampleCount() != 1 || len(h.GetExemplars()) != 0 {
			t.Errorf("%s: count %d, exemplars %v", name, h.GetSampleCount(), h.GetExemplars())
		}
		for _, b := range h.GetBucket() {
			if b.GetExemplar() != nil {
				t.Errorf("%s: exemplar %v", name, b.GetExemplar())
			}
		}
	}
}

// TestExemplarInterval: one exemplar per bucket per ExemplarInterval, by
// the events' own times.
func TestExemplarInterval(t *testing.T) {
	m := mustCollector(t, WithBuckets(0.001, 0.01))
	t0 := time.Unix(1000, 0)
	ev := func(at time.Time, d time.Duration) ratelimit.Event {
		return ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true}, Start: at, Duration: d}
	}
	trace := func(n int) context.Context {
		return sampledCtx(fmt.Sprintf("%032x", n), spanHex)
	}
	m.OnDecision(trace(1), ev(t0, 100*time.Microsecond))                         // bucket 0.001: exemplar 1
	m.OnDecision(trace(2), ev(t0.Add(500*time.Millisecond), time.Millisecond))   // same bucket, too soon
	m.OnDecision(trace(3), ev(t0.Add(500*time.Millisecond), 5*time.Millisecond)) // bucket 0.01: exemplar 3
	m.OnDecision(trace(4), ev(t0.Add(time.Second), 200*time.Microsecond))        // bucket 0.001, 1s later: exemplar 4
	h := gatherHistogram(t, m)
	got := map[float64]string{}
	for _, b := range h.GetBucket() {
		for _, l := range b.GetExemplar().GetLabel() {
			if l.GetName() == "trace_id" {
				got[b.GetUpperBound()] = l.GetValue()
			}
		}
	}
	want := map[float64]string{0.001: fmt.Sprintf("%032x", 4), 0.01: fmt.Sprintf("%032x", 3)}
	if len(got) != len(want) || got[0.001] != want[0.001] || got[0.01] != want[0.01] {
		t.Fatalf("exemplars by bucket %v, want %v", got, want)
	}
	if h.GetSampleCount() != 4 || len(h.GetExemplars()) != 3 {
		t.Fatalf("count %d, native exemplars %d; want 4 observations, 3 exemplars", h.GetSampleCount(), len(h.GetExemplars()))
	}
}

// TestLint runs promlint (as promtool does) over every metric, each with
// at least one series.
func TestLint(t *testing.T) {
	m := mustCollector(t, WithConstLabels(prometheus.Labels{"service": "shop"}))
	feedAll(m)
	// 11 fed, and the zero series every limiter gets: backend errors of
	// the 5 other types and its refunded cost.
	if n := testutil.CollectAndCount(m); n != 17 {
		t.Fatalf("%d series, want 17", n)
	}
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// feedAll publishes one event of each kind, so that every metric has a
// series: allowed, blocked, failed with an exemplar, dropped, and a
// circuit breaker opening.
func feedAll(m *Collector) {
	base := ratelimit.Event{Namespace: "api", Cost: 1, Start: time.Unix(1, 0), Duration: 40 * time.Microsecond}
	ctx := sampledCtx(traceHex, spanHex)
	allowed, blocked, failed := base, base, base
	allowed.Result = ratelimit.Result{Allowed: true, Remaining: 4}
	blocked.Result = ratelimit.Result{RetryAfter: time.Second}
	failed.Result = ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen}
	failed.Err = &ratelimit.BackendError{Type: ratelimit.ErrorScript, Code: "BUSY", Err: errors.New("BUSY")}
	for _, e := range []ratelimit.Event{allowed, blocked, failed} {
		m.OnDecision(ctx, e)
	}
	m.Dropped("slog").OnDecision(ctx, allowed)
	m.OnBreakerChange(ctx, ratelimit.BreakerChange{Namespace: "api", From: ratelimit.BreakerClosed, To: ratelimit.BreakerOpen})
}

// TestExposition serves the registry through a real promhttp handler with
// OpenMetrics on, as the README says to. The OpenMetrics scrape must carry
// the exemplar and be well formed; the classic text scrape of the same
// handler must pass promtool check metrics. (promtool cannot parse
// OpenMetrics: prometheus/prometheus#8932; both scrapes hold the same
// families.)
func TestExposition(t *testing.T) {
	m := mustCollector(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	feedAll(m)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()

	t.Run("openmetrics", func(t *testing.T) {
		body, ct := scrape(t, srv.URL, "application/openmetrics-text; version=1.0.0")
		if !strings.HasPrefix(ct, "application/openmetrics-text") {
			t.Fatalf("Content-Type %q, want OpenMetrics", ct)
		}
		// The exemplar sits on the bucket of the observation (its label
		// order is not fixed).
		ex := regexp.MustCompile(`(?m)^ratelimit_backend_duration_seconds_bucket\{[^}]*le="5e-05"\} 3 # \{(.*)\} 4e-05 [0-9.e+]+$`).FindStringSubmatch(body)
		if ex == nil || !strings.Contains(ex[1], `trace_id="`+traceHex+`"`) || !strings.Contains(ex[1], `span_id="`+spanHex+`"`) {
			t.Fatalf("no exemplar with trace_id %s and span_id %s in:\n%s", traceHex, spanHex, body)
		}
		checkOpenMetrics(t, body)
	})
	t.Run("promtool", func(t *testing.T) {
		promtool := redistest.Binary(t, "promtool")
		body, ct := scrape(t, srv.URL, "text/plain; version=0.0.4")
		if !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("Content-Type %q, want text/plain", ct)
		}
		for _, name := range []string{DecisionsName, CostName, BackendDurationName + "_bucket", BackendErrorsName, DroppedName} {
			if !strings.Contains(body, "\n"+name+"{") {
				t.Fatalf("%s missing from:\n%s", name, body)
			}
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, body)
		}
	})
	t.Run("promtool-catches", func(t *testing.T) {
		// The check can fail: a counter without _total is reported.
		promtool := redistest.Binary(t, "promtool")
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader("# HELP ratelimit_bad A counter.\n# TYPE ratelimit_bad counter\nratelimit_bad 1\n")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("promtool accepted a counter without _total: %s", out)
		}
	})
}

// omLine is one OpenMetrics sample: name, optional labels, value, optional
// exemplar (labels, value, timestamp).
var omLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? ([-+0-9.eE]+|\+Inf)( # \{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\} [-+0-9.eE]+ [0-9.eE+]+)?$`)

func TestOMLine(t *testing.T) {
	for line, want := range map[string]bool{
		`a_total{x="1",y="2"} 1.0`:                              true,
		`a_bucket{le="+Inf"} 3 # {trace_id="ab"} 4e-05 1.5e+09`: true,
		`a 2`:                     true,
		`a{x="1"} one`:            false,
		`a{x=1} 1`:                false,
		`a 1 # {trace_id="ab"}`:   false,
		`a 1 # trace_id="ab" 1 2`: false,
	} {
		if got := omLine.MatchString(line); got != want {
			t.Errorf("omLine(%q) = %v, want %v", line, got, want)
		}
	}
}

// checkOpenMetrics checks the shape of an OpenMetrics text exposition:
// HELP and TYPE before each family's samples, samples well formed, and the
// closing # EOF.
func checkOpenMetrics(t *testing.T, body string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if lines[len(lines)-1] != "# EOF" {
		t.Fatalf("exposition does not end with # EOF:\n%s", body)
	}
	family := ""
	for i, l := range lines[:len(lines)-1] {
		switch {
		case strings.HasPrefix(l, "# HELP "):
			family = strings.Fields(l)[2]
		case strings.HasPrefix(l, "# TYPE "):
			if f := strings.Fields(l); len(f) != 4 || f[2] != family {
				t.Errorf("line %d: TYPE without HELP: %q", i+1, l)
			}
		case !omLine.MatchString(l):
			t.Errorf("line %d: malformed sample %q", i+1, l)
		case family == "" || !strings.HasPrefix(l, family):
			t.Errorf("line %d: sample outside its family %q: %q", i+1, family, l)
		}
	}
}

func scrape(t *testing.T, url, accept string) (body, contentType string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
	}
	return string(b), resp.Header.Get("Content-Type")
}

// TestNoAllocs: once a namespace and algorithm are cached, an event without
// a sampled span costs no allocation, whatever its outcome.
func TestNoAllocs(t *testing.T) {
	m := mustCollector(t)
	feedAll(m) // resolves every child used below
	ctx := context.Background()
	base := ratelimit.Event{Namespace: "api", Cost: 1, Start: time.Unix(1, 0), Duration: 40 * time.Microsecond}
	failed := base
	failed.Result = ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen}
	failed.Err = &ratelimit.BackendError{Type: ratelimit.ErrorScript, Err: errors.New("BUSY")}
	dropped := m.Dropped("slog")
	for name, f := range map[string]func(){
		"allowed": func() { e := base; e.Result.Allowed = true; m.OnDecision(ctx, e) },
		"blocked": func() { m.OnDecision(ctx, base) },
		"failed":  func() { m.OnDecision(ctx, failed) },
		"dropped": func() { dropped.OnDecision(ctx, base) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per event, want 0", name, n)
		}
	}
}

// TestConcurrent publishes from many goroutines on new and cached series
// (run with -race) and checks that no event is lost.
func TestConcurrent(t *testing.T) {
	m := mustCollector(t)
	const goroutines, each = 8, 500
	namespaces := []string{"a", "b", "c"}
	done := make(chan struct{})
	for g := range goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				m.OnDecision(context.Background(), ratelimit.Event{
					Namespace: namespaces[(g+i)%len(namespaces)], Cost: 1,
					Result: ratelimit.Result{Allowed: i%2 == 0}, Start: time.Unix(1, 0), Duration: time.Microsecond,
				})
			}
		}()
	}
	for range goroutines {
		<-done
	}
	var total float64
	for _, ns := range namespaces {
		for _, d := range []string{"allowed", "blocked"} {
			total += testutil.ToFloat64(m.decisions.WithLabelValues(ns, "token_bucket", d, "quota"))
		}
	}
	if total != goroutines*each {
		t.Fatalf("counted %v decisions, want %d", total, goroutines*each)
	}
}

func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		b.WriteString(mf.String())
	}
	return b.String()
}

// histogramCounts returns the sample count of the duration histogram per
// namespace.
func histogramCounts(t *testing.T, g prometheus.Gatherer) map[string]uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != BackendDurationName {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == labelNamespace {
					out[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// gatherHistogram returns the one duration histogram c holds.
func gatherHistogram(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == BackendDurationName {
			if len(mf.GetMetric()) != 1 {
				t.Fatalf("%d duration series, want 1", len(mf.GetMetric()))
			}
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatal("no duration histogram")
	return nil
}
