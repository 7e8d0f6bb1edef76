package otel_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
)

// Each decision is a span, child of the request's span. Here the spans go to
// an in-memory recorder; in a program they go to an OTLP exporter
// (sdktrace.WithBatcher(exporter)), and without options the global providers
// are used.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())

	sub := rlotel.NewSubscriber(rlotel.WithTracerProvider(tp), rlotel.WithMeterProvider(mp))
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(1), ratelimit.WithNamespace("api"),
		ratelimit.WithSubscribers(sub))
	if err != nil {
		panic(err)
	}

	ctx, request := tp.Tracer("app").Start(context.Background(), "GET /items")
	_, _ = limiter.Allow(ctx, "user:1")
	_, _ = limiter.Allow(ctx, "user:1")
	request.End()

	for _, s := range spans.Ended()[:2] {
		fmt.Println(s.Name(), s.Parent().SpanID() == request.SpanContext().SpanID(), s.Status().Code)
		for _, a := range s.Attributes() {
			switch a.Key {
			case rlotel.DecisionKey, rlotel.ReasonKey, rlotel.RemainingKey, rlotel.RetryAfterKey:
				fmt.Printf("  %s=%s\n", a.Key, a.Value.Emit())
			}
		}
	}
	// Output:
	// ratelimit api true Unset
	//   ratelimit.decision=allowed
	//   ratelimit.reason=quota
	//   ratelimit.remaining=0
	// ratelimit api true Unset
	//   ratelimit.decision=blocked
	//   ratelimit.reason=quota
	//   ratelimit.remaining=0
	//   ratelimit.retry_after=60
}
