package otel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/telemetrykit"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/testkit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// harness is a Subscriber on in-memory SDKs, and the events it was given
// (recorded by a second subscriber on the same bus).
type harness struct {
	sub    *Subscriber
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mu     sync.Mutex
	events []ratelimit.Event
}

func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	h := &harness{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		_ = h.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	h.sub = NewSubscriber(append([]Option{WithTracerProvider(h.tp), WithMeterProvider(mp)}, opts...)...)
	return h
}

// subscribers returns the option that subscribes the harness and its event
// recorder.
func (h *harness) subscribers() ratelimit.Option {
	return ratelimit.WithSubscribers(h.sub, ratelimit.SubscriberFunc(func(_ context.Context, e ratelimit.Event) {
		h.mu.Lock()
		h.events = append(h.events, e)
		h.mu.Unlock()
	}))
}

func (h *harness) metrics(t *testing.T) metricdata.ScopeMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 {
		t.Fatalf("%d scopes, want 1", len(rm.ScopeMetrics))
	}
	return rm.ScopeMetrics[0]
}

// newLimiter returns a limiter on a fresh miniredis, and the miniredis.
func newLimiter(t *testing.T, lim ratelimit.Limit, opts ...ratelimit.Option) (*ratelimit.Limiter, *miniredis.Miniredis) {
	return testkit.MiniLimiter(t, lim, opts...)
}

const identity = "alice@example.com"

// TestSpans runs allowed, blocked, fail-open and fail-closed decisions under
// a request span and checks each decision span: parent, timing, kind,
// attributes, status.
func TestSpans(t *testing.T) {
	h := newHarness(t)
	api, mr := newLimiter(t, ratelimit.PerSecond(1).WithBurst(2), ratelimit.WithNamespace("api"), h.subscribers())
	closedC := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer closedC.Close()
	closed, err := ratelimit.New(closedC, ratelimit.PerSecond(1), ratelimit.WithNamespace("api"),
		ratelimit.WithFailStrategy(ratelimit.FailClosed), h.subscribers())
	if err != nil {
		t.Fatal(err)
	}

	addr := mr.Addr()
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "GET /items")
	if _, err := api.AllowN(ctx, identity, 2); err != nil { // allowed, 0 left
		t.Fatal(err)
	}
	if res, err := api.Allow(ctx, identity); err != nil || res.Allowed { // blocked by quota
		t.Fatalf("%+v %v", res, err)
	}
	mr.Close()
	if _, err := api.Allow(ctx, identity); !errors.Is(err, ratelimit.ErrBackend) { // fail open
		t.Fatal(err)
	}
	if _, err := closed.Allow(ctx, identity); !errors.Is(err, ratelimit.ErrBackend) { // fail closed
		t.Fatal(err)
	}
	parent.End()

	spans := h.spans.Ended()
	if len(spans) != 5 || len(h.events) != 4 {
		t.Fatalf("%d spans (want 4 decisions + the parent), %d events", len(spans), len(h.events))
	}
	key, _ := api.Key(identity)
	host, port := splitAddr(t, addr)
	base := []attribute.KeyValue{
		NamespaceKey.String("api"), AlgorithmKey.String("token_bucket"),
		attribute.String("db.system.name", "redis"),
		attribute.String("db.stored_procedure.name", "token_bucket"),
		attribute.String("server.address", host), attribute.Int("server.port", port),
	}
	want := []struct {
		extra  []attribute.KeyValue
		status codes.Code
	}{
		{[]attribute.KeyValue{DecisionKey.String("allowed"), ReasonKey.String("quota"), CostKey.Int(2), RemainingKey.Int(0)}, codes.Unset},
		{[]attribute.KeyValue{DecisionKey.String("blocked"), ReasonKey.String("quota"), CostKey.Int(1), RemainingKey.Int(0), RetryAfterKey.Float64(1)}, codes.Unset},
		{[]attribute.KeyValue{DecisionKey.String("allowed"), ReasonKey.String("fail_open"), CostKey.Int(1), attribute.String("error.type", "connection")}, codes.Error},
		{[]attribute.KeyValue{DecisionKey.String("blocked"), ReasonKey.String("fail_closed"), CostKey.Int(1), attribute.String("error.type", "connection")}, codes.Error},
	}
	for i, w := range want {
		s, e := spans[i], h.events[i]
		if s.Name() != "ratelimit api" || s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d: name %q kind %v", i, s.Name(), s.SpanKind())
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %d: parent %v, want the request span %v", i, s.Parent(), parent.SpanContext())
		}
		if !s.StartTime().Equal(e.Start) || !s.EndTime().Equal(e.Start.Add(e.Duration)) || e.Start.IsZero() {
			t.Errorf("span %d: %v..%v, want the event's %v + %v", i, s.StartTime(), s.EndTime(), e.Start, e.Duration)
		}
		if s.InstrumentationScope().Name != ScopeName {
			t.Errorf("span %d: scope %q", i, s.InstrumentationScope().Name)
		}
		wantAttrs := attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), w.extra...)...)
		if got := attribute.NewSet(s.Attributes()...); !got.Equals(&wantAttrs) {
			t.Errorf("span %d attributes:\n got %v\nwant %v", i, got.Encoded(attribute.DefaultEncoder()), wantAttrs.Encoded(attribute.DefaultEncoder()))
		}
		if s.Status().Code != w.status {
			t.Errorf("span %d: status %v, want %v", i, s.Status(), w.status)
		}
		if w.status == codes.Error && !strings.Contains(s.Status().Description, "connection refused") {
			t.Errorf("span %d: status description %q", i, s.Status().Description)
		}
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, "alice") || strings.Contains(v, key[len(key)-20:len(key)-1]) {
				t.Errorf("span %d: identity or key in %s=%s", i, a.Key, v)
			}
		}
	}
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	for _, c := range addr[i+1:] {
		port = port*10 + int(c-'0')
	}
	return addr[:i], port
}

// TestSpanEvents: with WithSpanEvents each decision is an event on the
// caller's span, which keeps its status, and no span is made.
func TestSpanEvents(t *testing.T) {
	h := newHarness(t, WithSpanEvents(true), WithRootSpans(true))
	api, mr := newLimiter(t, ratelimit.PerSecond(1), ratelimit.WithNamespace("api"), h.subscribers())
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "GET /items")
	for range 2 {
		if _, err := api.Allow(ctx, identity); err != nil {
			t.Fatal(err)
		}
	}
	mr.Close()
	if _, err := api.Allow(ctx, identity); !errors.Is(err, ratelimit.ErrBackend) {
		t.Fatal(err)
	}
	if _, err := api.Allow(context.Background(), identity); !errors.Is(err, ratelimit.ErrBackend) { // no span: nothing
		t.Fatal(err)
	}
	parent.End()
	spans := h.spans.Ended()
	if len(spans) != 1 || spans[0].Status().Code != codes.Unset {
		t.Fatalf("%d spans (want only the request's), status %v", len(spans), spans[0].Status())
	}
	events := spans[0].Events()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	for i, want := range []struct {
		decision, reason string
		extra            attribute.KeyValue
	}{
		{"allowed", "quota", RemainingKey.Int(0)},
		{"blocked", "quota", RetryAfterKey.Float64(1)},
		{"allowed", "fail_open", attribute.String("error.type", "connection")},
	} {
		ev, e := events[i], h.events[i]
		if ev.Name != EventName || !ev.Time.Equal(e.Start.Add(e.Duration)) {
			t.Errorf("event %d: %q at %v, want %q at %v", i, ev.Name, ev.Time, EventName, e.Start.Add(e.Duration))
		}
		set := attribute.NewSet(ev.Attributes...)
		for _, kv := range []attribute.KeyValue{
			NamespaceKey.String("api"), AlgorithmKey.String("token_bucket"), DecisionKey.String(want.decision),
			ReasonKey.String(want.reason), CostKey.Int(1), want.extra,
		} {
			if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
				t.Errorf("event %d: %s = %v, want %v", i, kv.Key, v.Emit(), kv.Value.Emit())
			}
		}
		if _, ok := set.Value("server.port"); ok {
			t.Errorf("event %d: server.port on an event", i)
		}
	}
}

// TestNoRootSpans: by default a decision outside a trace makes no span, but
// is counted.
func TestNoRootSpans(t *testing.T) {
	h := newHarness(t)
	h.sub.OnDecision(context.Background(), ratelimit.Event{Namespace: "bg", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	if n := len(h.spans.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent, want 0", n)
	}
	for _, m := range h.metrics(t).Metrics {
		if m.Name == DecisionsMetric {
			if dp := m.Data.(metricdata.Sum[int64]).DataPoints; len(dp) != 1 || dp[0].Value != 1 {
				t.Fatalf("decisions %+v", dp)
			}
			return
		}
	}
	t.Fatal("no decisions metric")
}

func TestRootSpanAndUntimed(t *testing.T) {
	h := newHarness(t, WithRootSpans(true))
	// No span in the context: a root span. A script error with a code.
	be := &ratelimit.BackendError{Type: ratelimit.ErrorScript, Code: "BUSY", Err: errors.New("BUSY Redis is busy running a script")}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.sub.OnDecision(context.Background(), ratelimit.Event{
		Namespace: "llm", Cost: 500, Start: start, Duration: 5 * time.Millisecond,
		Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen}, Err: be,
	})
	// Not timed, and an error that is not a BackendError.
	before := time.Now()
	h.sub.OnDecision(context.Background(), ratelimit.Event{
		Namespace: "llm", Cost: 1,
		Result: ratelimit.Result{Allowed: false, Reason: ratelimit.ReasonFailClosed}, Err: errors.New("replayed"),
	})
	spans := h.spans.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Parent().IsValid() || !s.StartTime().Equal(start) || s.EndTime().Sub(s.StartTime()) != 5*time.Millisecond {
		t.Errorf("root span: parent %v, %v..%v", s.Parent(), s.StartTime(), s.EndTime())
	}
	got := attribute.NewSet(s.Attributes()...)
	for k, want := range map[attribute.Key]string{"error.type": "script", "db.response.status_code": "BUSY", ReasonKey: "fail_open"} {
		if v, ok := got.Value(k); !ok || v.AsString() != want {
			t.Errorf("%s = %v, want %s", k, v.Emit(), want)
		}
	}
	if _, ok := got.Value("server.address"); ok {
		t.Error("server.address without a server")
	}
	if s.Status().Code != codes.Error || s.Status().Description != be.Error() {
		t.Errorf("status %v", s.Status())
	}
	s = spans[1]
	if s.StartTime().Before(before) {
		t.Errorf("untimed span starts at %v, before the event %v", s.StartTime(), before)
	}
	if set := attribute.NewSet(s.Attributes()...); func() string { v, _ := set.Value("error.type"); return v.AsString() }() != "other" {
		t.Errorf("error.type of %v, want other", set)
	}
}

// TestMetrics checks the three instruments after a scripted sequence.
func TestMetrics(t *testing.T) {
	h := newHarness(t)
	api, mr := newLimiter(t, ratelimit.PerSecond(1).WithBurst(3), ratelimit.WithNamespace("api"), h.subscribers())
	ctx := context.Background()
	for _, cost := range []int64{1, 2, 1, 0, 3} { // allowed, allowed, blocked, allowed, blocked
		if _, err := api.AllowN(ctx, identity, cost); err != nil {
			t.Fatal(err)
		}
	}
	mr.Close()
	if _, err := api.AllowN(ctx, identity, 2); !errors.Is(err, ratelimit.ErrBackend) { // fail open
		t.Fatal(err)
	}

	sm := h.metrics(t)
	if sm.Scope.Name != ScopeName {
		t.Errorf("scope %q", sm.Scope.Name)
	}
	outcome := func(decision, reason string) attribute.Set {
		return attribute.NewSet(NamespaceKey.String("api"), AlgorithmKey.String("token_bucket"),
			DecisionKey.String(decision), ReasonKey.String(reason))
	}
	sum := func(name, unit string, allowed, blocked, failOpen int64) metricdata.Metrics {
		return metricdata.Metrics{
			Name: name, Unit: unit,
			Data: metricdata.Sum[int64]{
				Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[int64]{
					{Attributes: outcome("allowed", "quota"), Value: allowed},
					{Attributes: outcome("blocked", "quota"), Value: blocked},
					{Attributes: outcome("allowed", "fail_open"), Value: failOpen},
				},
			},
		}
	}
	byName := map[string]metricdata.Metrics{}
	for _, m := range sm.Metrics {
		byName[m.Name] = m
	}
	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	decisions := byName[DecisionsMetric]
	decisions.Description = ""
	metricdatatest.AssertEqual(t, sum(DecisionsMetric, "{decision}", 3, 2, 1), decisions, opts...)
	cost := byName[CostMetric]
	cost.Description = ""
	metricdatatest.AssertEqual(t, sum(CostMetric, "{token}", 3, 4, 2), cost, opts...)

	dur, ok := byName[DurationMetric].Data.(metricdata.Histogram[float64])
	if !ok || byName[DurationMetric].Unit != "s" {
		t.Fatalf("%s: %+v", DurationMetric, byName[DurationMetric])
	}
	counts := map[string]uint64{}
	for _, dp := range dur.DataPoints {
		et, _ := dp.Attributes.Value("error.type")
		counts[et.Emit()] += dp.Count
		if len(dp.Bounds) != len(telemetrykit.DurationBuckets) || dp.Bounds[0] != 0.000025 {
			t.Errorf("bounds %v", dp.Bounds)
		}
		if sys, _ := dp.Attributes.Value("db.system.name"); sys.AsString() != "redis" {
			t.Errorf("duration point without db.system.name: %v", dp.Attributes)
		}
	}
	if counts[""] != 5 || counts["connection"] != 1 || len(counts) != 2 {
		t.Errorf("duration counts by error.type %v, want 5 ok and 1 connection", counts)
	}
}

// TestGlobalProviders: without options, and with nil ones, the global
// providers are used.
func TestGlobalProviders(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	oldTP, oldMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(oldTP)
		otel.SetMeterProvider(oldMP)
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	sub := NewSubscriber(WithTracerProvider(nil), WithMeterProvider(nil), nil, WithRootSpans(true))
	sub.OnDecision(context.Background(), ratelimit.Event{Namespace: "g", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	if n := len(rec.Ended()); n != 1 {
		t.Fatalf("%d spans on the global provider", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil || len(rm.ScopeMetrics) != 1 {
		t.Fatalf("global meter: %v, %+v", err, rm)
	}
}

// TestNotSampled: a parent that is not sampled gives a non-recording span
// and the metrics still count.
func TestNotSampled(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())
	sub := NewSubscriber(WithTracerProvider(tp), WithMeterProvider(mp), WithRootSpans(true))
	sub.OnDecision(context.Background(), ratelimit.Event{Namespace: "n", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded, want 0", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil || len(rm.ScopeMetrics) != 1 {
		t.Fatalf("metrics: %v, %+v", err, rm)
	}
}

func TestConcurrent(t *testing.T) {
	h := newHarness(t, WithRootSpans(true))
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				h.sub.OnDecision(context.Background(), ratelimit.Event{
					Namespace: []string{"a", "b", "c"}[(g+i)%3], Cost: 1, ServerAddr: "127.0.0.1:6379",
					Result: ratelimit.Result{Allowed: i%2 == 0}, Start: time.Now(), Duration: time.Microsecond,
				})
			}
		})
	}
	wg.Wait()
	if n := len(h.spans.Ended()); n != goroutines*each {
		t.Fatalf("%d spans, want %d", n, goroutines*each)
	}
	var total int64
	for _, m := range h.metrics(t).Metrics {
		if m.Name == DecisionsMetric {
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				total += dp.Value
			}
		}
	}
	if total != goroutines*each {
		t.Fatalf("counted %d decisions, want %d", total, goroutines*each)
	}
}

// TestMetricsOnlyNoAllocs: a decision without a span in the context (no
// span then) costs the metric measurements and no allocation.
func TestMetricsOnlyNoAllocs(t *testing.T) {
	h := newHarness(t)
	ev := ratelimit.Event{Namespace: "api", Cost: 1, ServerAddr: "127.0.0.1:6379",
		Result: ratelimit.Result{Allowed: true, Remaining: 3}, Start: time.Unix(1, 0), Duration: time.Millisecond}
	failed := ev
	failed.Result = ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen}
	failed.Err = &ratelimit.BackendError{Type: ratelimit.ErrorTimeout, Err: context.DeadlineExceeded}
	ctx := context.Background()
	h.sub.OnDecision(ctx, ev)
	h.sub.OnDecision(ctx, failed)
	for name, e := range map[string]ratelimit.Event{"allowed": ev, "failed": failed} {
		if n := testing.AllocsPerRun(200, func() { h.sub.OnDecision(ctx, e) }); n != 0 {
			t.Errorf("%s: %v allocations per decision, want 0", name, n)
		}
	}
}

// TestShardAttribute: a decision of a sharded limiter names its shard on
// the span, and no metric carries it.
func TestShardAttribute(t *testing.T) {
	h := newHarness(t)
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "request")
	h.sub.OnDecision(ctx, ratelimit.Event{Namespace: "hot", Algorithm: ratelimit.TokenBucket, Cost: 1, Shard: 2,
		Result: ratelimit.Result{Allowed: true, Remaining: 3}, Start: time.Now(), Duration: time.Millisecond})
	parent.End()
	var found bool
	for _, s := range h.spans.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == ShardKey && a.Value.AsInt64() == 2 {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no span with ratelimit.shard = 2")
	}
	for _, m := range h.metrics(t).Metrics {
		if strings.Contains(fmt.Sprint(m.Data), "ratelimit.shard") {
			t.Errorf("metric %s carries the shard", m.Name)
		}
	}
}
