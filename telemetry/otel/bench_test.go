package otel

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// discard is a SpanExporter that drops every span.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkOnDecision measures one event: span (always sampled, through a
// batch processor to a discarding exporter) plus metrics on a manual
// reader; with sampling off (ParentBased(NeverSample)); without a span in
// the context (metrics only, the default then); as an event on a
// recording span (WithSpanEvents); and with noop providers.
func BenchmarkOnDecision(b *testing.B) {
	ev := ratelimit.Event{Namespace: "api", Cost: 1, ServerAddr: "127.0.0.1:6379",
		Result: ratelimit.Result{Allowed: true, Remaining: 9}, Start: time.Unix(1, 0), Duration: 40 * time.Microsecond}
	for _, bc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{
		{"sampled", sdktrace.AlwaysSample()},
		{"not-sampled", sdktrace.ParentBased(sdktrace.NeverSample())},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(bc.sampler), sdktrace.WithBatcher(discard{}))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			defer tp.Shutdown(context.Background())
			defer mp.Shutdown(context.Background())
			sub := NewSubscriber(WithTracerProvider(tp), WithMeterProvider(mp), WithRootSpans(true))
			ctx := context.Background()
			sub.OnDecision(ctx, ev)
			b.ReportAllocs()
			for b.Loop() {
				sub.OnDecision(ctx, ev)
			}
		})
	}
	b.Run("metrics-only", func(b *testing.B) {
		// No span in the context and no WithRootSpans: metrics alone.
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer tp.Shutdown(context.Background())
		defer mp.Shutdown(context.Background())
		sub := NewSubscriber(WithTracerProvider(tp), WithMeterProvider(mp))
		ctx := context.Background()
		sub.OnDecision(ctx, ev)
		b.ReportAllocs()
		for b.Loop() {
			sub.OnDecision(ctx, ev)
		}
	})
	b.Run("events", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer tp.Shutdown(context.Background())
		defer mp.Shutdown(context.Background())
		sub := NewSubscriber(WithTracerProvider(tp), WithMeterProvider(mp), WithSpanEvents(true))
		// A new request span every 50 decisions, as a request has few
		// (a span keeps at most 128 events and evicts the oldest).
		app := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		defer app.Shutdown(context.Background())
		ctx, span := app.Tracer("app").Start(context.Background(), "request")
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%50 == 0 {
				span.End()
				ctx, span = app.Tracer("app").Start(context.Background(), "request")
			}
			sub.OnDecision(ctx, ev)
		}
		span.End()
	})
	b.Run("noop", func(b *testing.B) {
		sub := NewSubscriber(WithTracerProvider(trace.NewNoopTracerProvider()), WithRootSpans(true))
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			sub.OnDecision(ctx, ev)
		}
	})
}
