package obsbench

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// discard is a SpanExporter that drops every span, so that the benchmark
// pays for the SDK (span, batch queue) but not for a network exporter,
// which runs on the batch processor's goroutine anyway.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// dropProcessor is a SpanProcessor that drops every span at once, on the
// caller's goroutine: with it, a case measures making the span alone,
// without the batch processor's hand-off to its goroutine.
type dropProcessor struct{}

func (dropProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropProcessor) Shutdown(context.Context) error                  { return nil }
func (dropProcessor) ForceFlush(context.Context) error                { return nil }

// stack is the set of subscribers of one benchmark case.
type stack struct {
	subs     []ratelimit.Subscriber
	traced   bool // the caller's context holds a sampled request span
	shutdown func()
}

func newProm() ratelimit.Subscriber {
	c, err := prom.NewCollector()
	if err != nil {
		panic(err)
	}
	prometheus.NewRegistry().MustRegister(c)
	return c
}

// newOTel returns the otel subscriber on an always-sampling SDK that
// batches spans to a discarding exporter (or hands them to sp) and keeps
// metrics for a manual reader.
func newOTel(sp sdktrace.SpanProcessor, opts ...otel.Option) (ratelimit.Subscriber, *sdktrace.TracerProvider, *sdkmetric.ManualReader, func()) {
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(sdktrace.AlwaysSample())}
	if sp != nil {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(sp))
	} else {
		tpOpts = append(tpOpts, sdktrace.WithBatcher(discard{}))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sub := otel.NewSubscriber(append([]otel.Option{otel.WithTracerProvider(tp), otel.WithMeterProvider(mp)}, opts...)...)
	return sub, tp, reader, func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	}
}

func newSlog(w io.Writer) ratelimit.Subscriber {
	return telemetry.Slog(slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})))
}

func noop() {}

// cases are the subscriber sets measured. "traced" cases call Allow with a
// context holding a sampled request span, as in a server behind tracing
// middleware: the otel subscriber then records a child span per decision
// and the prom subscriber may attach an exemplar.
var cases = []struct {
	name  string
	build func() stack
}{
	{"none", func() stack { return stack{shutdown: noop} }},
	{"slog", func() stack { return stack{subs: []ratelimit.Subscriber{newSlog(io.Discard)}, shutdown: noop} }},
	{"prom", func() stack { return stack{subs: []ratelimit.Subscriber{newProm()}, shutdown: noop} }},
	{"prom-traced", func() stack { return stack{subs: []ratelimit.Subscriber{newProm()}, traced: true, shutdown: noop} }},
	{"otel-traced", func() stack {
		sub, _, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{sub}, traced: true, shutdown: stop}
	}},
	{"otel-traced-nobatch", func() stack {
		sub, _, _, stop := newOTel(dropProcessor{})
		return stack{subs: []ratelimit.Subscriber{sub}, traced: true, shutdown: stop}
	}},
	{"otel-events-traced", func() stack {
		sub, _, _, stop := newOTel(nil, otel.WithSpanEvents(true))
		return stack{subs: []ratelimit.Subscriber{sub}, traced: true, shutdown: stop}
	}},
	{"otel-root", func() stack {
		sub, _, _, stop := newOTel(nil, otel.WithRootSpans(true))
		return stack{subs: []ratelimit.Subscriber{sub}, shutdown: stop}
	}},
	{"all", func() stack {
		sub, _, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{newProm(), sub, newSlog(io.Discard)}, shutdown: stop}
	}},
	{"all-traced", func() stack {
		sub, _, _, stop := newOTel(nil)
		return stack{subs: []ratelimit.Subscriber{newProm(), sub, newSlog(io.Discard)}, traced: true, shutdown: stop}
	}},
	{"all-events-traced", func() stack {
		sub, _, _, stop := newOTel(nil, otel.WithSpanEvents(true))
		return stack{subs: []ratelimit.Subscriber{newProm(), sub, newSlog(io.Discard)}, traced: true, shutdown: stop}
	}},
}

// bench is one case ready to run: its limiter and context.
type bench struct {
	name   string
	l      *ratelimit.Limiter
	ctx    context.Context
	traced bool
	tracer trace.Tracer // the application's, for request spans
	span   trace.Span   // the current request span
}

// requestSize is how many decisions a request span of a traced case sees
// before it is replaced: like a request, it collects few children or
// events (a span keeps at most 128 events, and a long-lived one would pay
// for evicting them).
const requestSize = 50

// renew ends the current request span of a traced case and starts the
// next.
func (bc *bench) renew() {
	if !bc.traced {
		return
	}
	if bc.span != nil {
		bc.span.End()
	}
	bc.ctx, bc.span = bc.tracer.Start(context.Background(), "GET /items")
}

// setup starts a redis-server and builds every case on it, warmed up
// (connections, script cache, cached series). The limit is high enough that
// every call is allowed, so slog at Info logs nothing (allowed decisions are
// Debug).
func setup(b *testing.B) ([]*bench, []string) {
	srv := redistest.Start(b)
	client := srv.Client(b)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	// The application's tracer: its request spans are sampled and go
	// nowhere, so that only the subscribers' work is measured.
	app := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = app.Shutdown(context.Background()) })

	var out []*bench
	for _, c := range cases {
		st := c.build()
		b.Cleanup(st.shutdown)
		// A generous backend timeout: a stall of the shared machine must not
		// fail the benchmark.
		l, err := ratelimit.New(client, ratelimit.PerSecond(1e9), ratelimit.WithTimeout(5*time.Second),
			ratelimit.WithSubscribers(st.subs...))
		if err != nil {
			b.Fatal(err)
		}
		bc := &bench{name: c.name, l: l, ctx: context.Background(), traced: st.traced, tracer: app.Tracer("app")}
		bc.renew()
		b.Cleanup(func() {
			if bc.span != nil {
				bc.span.End()
			}
		})
		for i, id := range ids[:100] {
			if i%requestSize == 0 {
				bc.renew()
			}
			if _, err := l.Allow(bc.ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		out = append(out, bc)
	}
	return out, ids
}

// BenchmarkAllow measures one Allow on a real redis-server, serially, for
// each set of subscribers, one after the other: ns/op and allocs/op. A
// traced case also pays for a new request span every requestSize calls
// (one allocation and about 20ns per call).
func BenchmarkAllow(b *testing.B) {
	benches, ids := setup(b)
	for _, bc := range benches {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%requestSize == 0 {
					bc.renew()
				}
				if _, err := bc.l.Allow(bc.ctx, ids[i%len(ids)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOverhead interleaves the cases: each iteration (a round) runs a
// block of blockSize Allows per case, the cases in a shuffled order, and
// times each block in wall-clock time and in CPU time of this process (all
// its threads: the GC and the span batcher included, redis-server
// excluded). Load on the machine and Redis's latency then weigh on every
// case of a round alike, which separate benchmarks run seconds apart cannot
// promise, and the work a case leaves behind (garbage, queued spans) mostly
// lands in its own block. It reports, for each case, the median over the
// rounds of its wall and CPU ns per Allow, and the median of its
// per-round overhead over "none" in percent: medians, because a stall of
// the shared machine hits one block in a hundred and would swamp a mean.
func BenchmarkOverhead(b *testing.B) {
	const blockSize = 100
	benches, ids := setup(b)
	var wall, cpu [][]float64 // [round][case] ns per Allow
	order := make([]int, len(benches))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	// Per loop: one round of every case, blockSize decisions each; the
	// allocations per decision are TestAllocations' business.
	b.ReportAllocs()
	for b.Loop() {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		w, c := make([]float64, len(benches)), make([]float64, len(benches))
		for _, k := range order {
			bc := benches[k]
			bc.renew()
			c0, w0 := cpuTime(b), time.Now()
			for i := range blockSize {
				if i == requestSize {
					bc.renew() // inside the timing, as in BenchmarkAllow
				}
				if _, err := bc.l.Allow(bc.ctx, ids[(len(wall)*blockSize+i)%len(ids)]); err != nil {
					b.Fatal(err)
				}
			}
			w[k] = float64(time.Since(w0)) / blockSize
			c[k] = float64(cpuTime(b)-c0) / blockSize
		}
		wall, cpu = append(wall, w), append(cpu, c)
	}
	for k, bc := range benches {
		b.ReportMetric(median(wall, func(r []float64) float64 { return r[k] }), bc.name+"-ns/op")
		b.ReportMetric(median(cpu, func(r []float64) float64 { return r[k] }), bc.name+"-cpu-ns/op")
		if k > 0 {
			b.ReportMetric(median(wall, func(r []float64) float64 { return 100 * (r[k] - r[0]) / r[0] }), bc.name+"-%")
			b.ReportMetric(median(cpu, func(r []float64) float64 { return 100 * (r[k] - r[0]) / r[0] }), bc.name+"-cpu-%")
		}
	}
	b.ReportMetric(0, "ns/op") // an iteration is a round of blocks: meaningless
}

// median returns the median of f over rounds.
func median(rounds [][]float64, f func([]float64) float64) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// cpuTime returns the user and system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestAllThree checks on real Redis that the benchmark's "all" stack sees
// every decision: a Prometheus count, one span each, and a log line for the
// blocked one.
func TestAllThree(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	metrics, err := prom.NewCollector()
	if err != nil {
		t.Fatal(err)
	}
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
	if got := decisions(t, reg, "allowed"); got != 2 {
		t.Errorf("prom: %v allowed decisions, want 2", got)
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

// TestPromAddsNoAllocations: on real Redis, Allow allocates as often with
// the Prometheus subscriber as with none (also with a sampled span in the
// context, past the first exemplar of each bucket, or with the slog
// subscriber at Info, or with the otel one and no span in the context).
func TestPromAddsNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not reproducible under -race (sync.Pool drops items)")
	}
	srv := redistest.Start(t)
	client := srv.Client(t)
	app := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer app.Shutdown(context.Background())
	traced, span := app.Tracer("app").Start(context.Background(), "request")
	defer span.End()
	otelSub, _, _, stop := newOTel(nil)
	defer stop()

	allocs := func(ctx context.Context, subs ...ratelimit.Subscriber) float64 {
		l, err := ratelimit.New(client, ratelimit.PerSecond(1e9), ratelimit.WithTimeout(5*time.Second), ratelimit.WithSubscribers(subs...))
		if err != nil {
			t.Fatal(err)
		}
		for range 10 { // warm: connection, script cache, series, exemplars
			if _, err := l.Allow(ctx, "user:1"); err != nil {
				t.Fatal(err)
			}
		}
		return testing.AllocsPerRun(200, func() {
			if _, err := l.Allow(ctx, "user:1"); err != nil {
				t.Fatal(err)
			}
		})
	}
	base := allocs(context.Background())
	if base == 0 {
		t.Fatal("Allow without subscribers does not allocate at all: the measurement is broken")
	}
	for name, got := range map[string]float64{
		"prom":        allocs(context.Background(), newProm()),
		"prom-traced": allocs(traced, newProm()),
		"slog":        allocs(context.Background(), newSlog(io.Discard)),
		"all":         allocs(context.Background(), newProm(), otelSub, newSlog(io.Discard)),
	} {
		if got != base {
			t.Errorf("%s: %v allocations per Allow, %v without subscribers", name, got, base)
		}
	}
}

// BenchmarkParallel measures throughput with 32 callers per CPU, as a busy
// server has, where the span batcher's hand-off to its goroutine is shared
// by many spans: ns/op is wall time per decision across all callers
// (1/throughput). Each caller starts its own request span every
// requestSize calls in the traced cases.
func BenchmarkParallel(b *testing.B) {
	benches, ids := setup(b)
	for _, bc := range benches {
		switch bc.name {
		case "none", "prom", "all", "all-traced", "all-events-traced":
		default:
			continue
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				ctx, span := context.Background(), trace.Span(nil)
				for i := 0; pb.Next(); i++ {
					if bc.traced && i%requestSize == 0 {
						if span != nil {
							span.End()
						}
						ctx, span = bc.tracer.Start(context.Background(), "GET /items")
					}
					if _, err := bc.l.Allow(ctx, ids[i%len(ids)]); err != nil {
						b.Error(err)
						return
					}
				}
				if span != nil {
					span.End()
				}
			})
		})
	}
}
