package main

import (
	"context"
	"fmt"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// serviceName is the OpenTelemetry service.name unless OTEL_SERVICE_NAME
// says otherwise.
const serviceName = "ratelimit-demo"

// setupTracing exports spans over OTLP/HTTP when an endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, read
// by the exporter itself, with the other OTEL_* variables), and returns the
// provider and its shutdown, which flushes the spans still queued. Without
// an endpoint the provider is a no-op and costs nothing.
func setupTracing(ctx context.Context, endpointSet bool) (trace.TracerProvider, func(context.Context) error, string, error) {
	if !endpointSet {
		return noop.NewTracerProvider(), func(context.Context) error { return nil },
			"off (set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://localhost:4318, to export traces)", nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, "", fmt.Errorf("OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, nil, "", fmt.Errorf("OTel resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	// As an application would: the global provider and W3C propagation,
	// so that a caller's traceparent continues its trace here.
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp, tp.Shutdown, "OTLP/HTTP to the endpoint in OTEL_EXPORTER_OTLP_ENDPOINT", nil
}

// traced wraps h in otelhttp server spans, the parents of the limiter's
// decision spans; otelhttp names each after the route pattern the mux
// matched ("GET /api/hello").
func traced(h http.Handler, tp trace.TracerProvider) http.Handler {
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/healthz" && r.URL.Path != "/metrics" }))
}
