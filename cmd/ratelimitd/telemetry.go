package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// serviceMetrics are the service's own metrics, beside the library's
// ratelimit_* ones (telemetry/prom), whose namespace label is the domain.
// Every label is bounded: domains and descriptor paths come from the
// configuration (an unknown domain is counted as "_unknown"), never from a
// request.
type serviceMetrics struct {
	descriptors *prometheus.CounterVec
	requests    *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	lastOK      prometheus.Gauge
	lastReload  prometheus.Gauge
	domains     prometheus.Gauge
}

func newServiceMetrics() *serviceMetrics {
	return &serviceMetrics{
		descriptors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimitd_descriptor_decisions_total",
			Help: "Descriptors decided, by domain, descriptor path of the configuration and code (ok, over_limit, shadow_over_limit, unlimited).",
		}, []string{"domain", "descriptor", "code"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimitd_requests_total",
			Help: "Requests answered, by API (grpc, json, check, peek, refund, reset) and overall code (ok, over_limit, error).",
		}, []string{"api", "code"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimitd_config_reloads_total",
			Help: "Configuration loads, by result (success, failure); a failed load keeps the configuration in force.",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimitd_config_last_reload_successful",
			Help: "1 when the last configuration load succeeded, 0 when it was refused.",
		}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimitd_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded, in Unix seconds.",
		}),
		domains: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimitd_config_domains",
			Help: "Domains in the configuration in force.",
		}),
	}
}

func (m *serviceMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.descriptors, m.requests, m.reloads, m.lastOK, m.lastReload, m.domains)
}

func (m *serviceMetrics) reloaded(ok bool, domains int) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastOK.Set(1)
		m.lastReload.Set(float64(time.Now().Unix()))
		m.domains.Set(float64(domains))
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
	m.lastOK.Set(0)
}

func (m *serviceMetrics) unknownDomain() {
	m.descriptors.WithLabelValues("_unknown", "", "ok").Inc()
}

func (m *serviceMetrics) observe(domain string, dec Decision, mode Mode) {
	if mode != ModeCheck {
		return
	}
	for _, st := range dec.Statuses {
		path, code := "", "ok"
		if st.Rule != nil {
			path = st.Rule.Path
		}
		switch {
		case st.Rule != nil && st.Rule.Unlimited:
			code = "unlimited"
		case st.Shadow && !st.Result.Allowed || (st.Result.Reason == ratelimit.ReasonShadow):
			code = "shadow_over_limit"
		case st.Code == CodeOverLimit:
			code = "over_limit"
		}
		m.descriptors.WithLabelValues(domain, path, code).Inc()
	}
}

func (m *serviceMetrics) request(api string, code string) {
	m.requests.WithLabelValues(api, code).Inc()
}

// serviceName is the OpenTelemetry service.name unless OTEL_SERVICE_NAME
// says otherwise.
const serviceName = "ratelimitd"

// setupTracing exports spans over OTLP/HTTP when an endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, read
// by the exporter, with the other OTEL_* variables), and returns the
// provider and its shutdown, which flushes queued spans. Without an
// endpoint the provider is a no-op.
func setupTracing(ctx context.Context, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, nil, fmt.Errorf("OTel resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagators())
	return tp, tp.Shutdown, nil
}

func propagators() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// HeaderStyle selects the rate-limit response headers the service asks
// Envoy (response_headers_to_add) and HTTP callers to add.
type HeaderStyle int

const (
	// HeadersDraft11 sends draft-ietf-httpapi-ratelimit-headers-11's
	// RateLimit-Policy and RateLimit lists, one item per charged
	// descriptor, named after its rule (name, else its configuration
	// path), and Retry-After when over the limit.
	HeadersDraft11 HeaderStyle = iota
	// HeadersXRateLimit sends the legacy X-RateLimit-Limit, -Remaining and
	// -Reset (delta seconds) of the descriptor closest to its limit, as
	// envoyproxy/ratelimit does, and Retry-After when over the limit.
	HeadersXRateLimit
	// HeadersNone sends none.
	HeadersNone
)

func parseHeaderStyle(s string) (HeaderStyle, error) {
	switch s {
	case "draft11":
		return HeadersDraft11, nil
	case "x-ratelimit":
		return HeadersXRateLimit, nil
	case "none":
		return HeadersNone, nil
	}
	return 0, fmt.Errorf("-headers %q: want draft11, x-ratelimit or none", s)
}

// Header is one response header.
type Header struct{ Key, Value string }

const maxSF = 999_999_999_999_999

// headers returns the response headers of dec in style.
func headers(style HeaderStyle, dec Decision) []Header {
	if style == HeadersNone {
		return nil
	}
	var out []Header
	var policies, limits []string
	closest := -1
	for i, st := range dec.Statuses {
		if !st.Limited || st.Rule == nil || st.Shadow {
			continue
		}
		if closest < 0 || st.Remaining < dec.Statuses[closest].Remaining {
			closest = i
		}
		if style != HeadersDraft11 {
			continue
		}
		lim := st.Result.Limit
		name := st.Rule.Name
		if name == "" {
			name = st.Rule.Path
		}
		p := sfString(name) + ";q=" + strconv.FormatInt(min(lim.Capacity(), maxSF), 10) + ";w=" + strconv.FormatInt(window(lim), 10)
		if st.Rule.QuotaUnit != "" && st.Rule.QuotaUnit != "requests" {
			p += ";qu=" + sfString(st.Rule.QuotaUnit)
		}
		policies = append(policies, p)
		limits = append(limits, sfString(name)+";r="+strconv.FormatUint(uint64(st.Remaining), 10)+";t="+strconv.FormatInt(ceilSeconds(st.Reset), 10))
	}
	if len(policies) > 0 {
		out = append(out, Header{"RateLimit-Policy", strings.Join(policies, ", ")}, Header{"RateLimit", strings.Join(limits, ", ")})
	}
	if style == HeadersXRateLimit && closest >= 0 {
		st := dec.Statuses[closest]
		out = append(out,
			Header{"X-RateLimit-Limit", strconv.FormatInt(st.Result.Limit.Capacity(), 10)},
			Header{"X-RateLimit-Remaining", strconv.FormatUint(uint64(st.Remaining), 10)},
			Header{"X-RateLimit-Reset", strconv.FormatInt(ceilSeconds(st.Reset), 10)})
	}
	if dec.Code == CodeOverLimit {
		var retry time.Duration
		for _, st := range dec.Statuses {
			if st.Code == CodeOverLimit && st.Reset > retry {
				retry = st.Reset
			}
		}
		out = append(out, Header{"Retry-After", strconv.FormatInt(max(ceilSeconds(retry), 1), 10)})
	}
	return out
}

// window is RateLimit-Policy's w: the seconds an empty limit takes to
// refill its whole capacity, rounded up, at least 1.
func window(l ratelimit.Limit) int64 {
	if l.Rate <= 0 {
		return 1
	}
	f := math.Ceil(float64(l.Capacity()) * l.Per.Seconds() / float64(l.Rate))
	return int64(max(1, min(f, maxSF)))
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(int64(math.Ceil(d.Seconds())), maxSF)
}

// sfString is s as a Structured Field String: printable ASCII, with '"'
// and '\' escaped; other bytes become '?'.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
