package obsbench

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// discard is a SpanExporter that drops every span, so that the benchmark
// pays for the SDK (span, batch queue) but not for a network exporter,
// which runs on the batch processor's goroutine anyway.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// stack is the set of subscribers of one benchmark case.
type stack struct {
	subs     []ratelimit.Subscriber
	tracer   trace.Tracer // for a request span as parent, when set
	shutdown func()
}

func newProm() ratelimit.Subscriber {
	c := prom.NewCollector()
	prometheus.NewRegistry().MustRegister(c)
	return c
}

// newOTel returns the otel subscriber on an always-sampling SDK that
// batches spans to a discarding exporter and keeps metrics for a reader.
func newOTel(sp sdktrace.SpanProcessor) (ratelimit.Subscriber, *sdktrace.TracerProvider, *sdkmetric.ManualReader, func()) {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(sdktrace.AlwaysSample())}
	if sp != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	} else {
		opts = append(opts, sdktrace.WithBatcher(discard{}))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sub := otel.NewSubscriber(otel.WithTracerProvider(tp), otel.WithMeterProvider(mp))
	return sub, tp, reader, func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	}
}

func newSlog(w io.Writer) ratelimit.Subscriber {
	return telemetry.Slog(slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})))
}

var cases = []struct {
	name  string
	build func() stack
}{
	{"none", func() stack { return stack{shutdown: func() {}} }},
	{"slog", func() stack { return stack{subs: []ratelimit.Subscriber{newSlog(io.Discard)}, shutdown: func() {}} }},
	{"prom", func() stack { return stack{subs: []ratelimit.Subscriber{newProm()}, shutdown: func() {}} }},
	{"otel", func() stack {
		sub, _, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{sub}, shutdown: stop}
	}},
	{"all", func() stack {
		sub, _, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{newProm(), sub, newSlog(io.Discard)}, shutdown: stop}
	}},
	// As in a traced server: the caller's context holds a sampled request
	// span, so the decision span has a parent and Prometheus records an
	// exemplar with every observation.
	{"all-traced", func() stack {
		sub, tp, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{newProm(), sub, newSlog(io.Discard)}, tracer: tp.Tracer("app"), shutdown: stop}
	}},
}

// BenchmarkAllow measures one Allow on a real redis-server, serially, for
// each set of subscribers. Identities rotate over 1000 and the limit is high
// enough that every call is allowed (slog at Info then logs nothing: allowed
// decisions are Debug).
func BenchmarkAllow(b *testing.B) {
	srv := redistest.Start(b)
	client := srv.Client(b)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			st := c.build()
			defer st.shutdown()
			l, err := ratelimit.New(client, ratelimit.PerSecond(1e9), ratelimit.WithSubscribers(st.subs...))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if st.tracer != nil {
				var span trace.Span
				ctx, span = st.tracer.Start(ctx, "GET /items")
				defer span.End()
			}
			for _, id := range ids { // warm up: connections, script cache, series
				if _, err := l.Allow(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAllThree checks on real Redis that the benchmark's "all" stack sees
// every decision: a Prometheus count, one span each, and a log line for the
// blocked one.
func TestAllThree(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	metrics := prom.NewCollector()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics)
	spans := tracetest.NewSpanRecorder()
	sub, tp, reader, stop := newOTel(spans)
	defer stop()
	var logs countWriter
	l, err := ratelimit.New(client, ratelimit.PerMinute(2), ratelimit.WithNamespace("obs"),
		ratelimit.WithSubscribers(metrics, sub, newSlog(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tp.Tracer("app").Start(context.Background(), "request")
	for range 3 {
		if _, err := l.Allow(ctx, "user:1"); err != nil {
			t.Fatal(err)
		}
	}
	span.End()
	if got := decisions(t, reg, "blocked"); got != 1 {
		t.Errorf("prom: %v blocked decisions, want 1", got)
	}
	if n := len(spans.Ended()); n != 4 {
		t.Errorf("otel: %d spans, want 3 decisions and the request", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil || len(rm.ScopeMetrics) != 1 {
		t.Errorf("otel metrics: %v %+v", err, rm)
	}
	if logs.lines != 1 {
		t.Errorf("slog: %d lines at Info, want 1 (the block)", logs.lines)
	}
}

type countWriter struct{ lines int }

func (w *countWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}

// decisions returns the count of the "obs" namespace's decisions by quota
// with the given decision.
func decisions(t *testing.T, g prometheus.Gatherer, decision string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != prom.DecisionsName {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == "obs" && labels["decision"] == decision && labels["reason"] == "quota" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s decisions series", decision)
	return 0
}
