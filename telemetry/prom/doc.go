// Package prom exports rate-limit decisions as Prometheus metrics.
//
// A Collector is both a ratelimit.Subscriber and a prometheus.Collector:
// subscribe it to one or more limiters and register it on a registry of your
// choice (it never registers itself on the global one):
//
//	metrics, err := prom.NewCollector()
//	...
//	reg.MustRegister(metrics)
//	limiter, err := ratelimit.New(rdb, limit, ratelimit.WithSubscribers(metrics))
//
// # Metrics
//
// Labels are bounded values only: the limiter's namespace and algorithm, the
// decision, its reason and the backend error type. The identity and the
// Redis key never become a label.
//
//	ratelimit_decisions_total{namespace,algorithm,decision,reason}       counter
//	ratelimit_cost_total{namespace,algorithm,decision,reason}            counter
//	ratelimit_backend_duration_seconds{namespace,algorithm}              histogram
//	ratelimit_backend_errors_total{namespace,algorithm,type}             counter
//	ratelimit_events_dropped_total{namespace,algorithm,subscriber}       counter
//	ratelimit_circuit_open{namespace,algorithm}                          gauge
//	ratelimit_circuit_transitions_total{namespace,algorithm,to}          counter
//	ratelimit_cost_refunded_total{namespace,algorithm}                   counter
//	ratelimit_refund_errors_total{namespace,algorithm,type}              counter
//
// decision is "allowed" or "blocked"; reason is ratelimit.Reason's String
// ("quota" when Redis decided, "shadow" when shadow mode allowed what the
// quota would have blocked, "fail_open" or "fail_closed" when the fail
// strategy did); type is
// ratelimit.ErrorType's String ("timeout", "connection", "script",
// "canceled", "circuit_open", "other").
//
// The circuit metrics follow a limiter's circuit breaker
// (ratelimit.WithBreaker; the Collector is a ratelimit.BreakerSubscriber):
// ratelimit_circuit_open is 1 while the breaker skips Redis (open or
// half-open) and 0 once it is closed, and the transitions are counted by
// the state changed to ("open", "half_open", "closed"). A limiter has these
// series once its breaker first changes state. A decision the open breaker
// made counts as fail_open or fail_closed with error type "circuit_open",
// and is not observed in the duration histogram (no Redis call was timed).
//
// ratelimit_cost_total counts cost units (tokens) by outcome, so that the
// cost requested is sum(ratelimit_cost_total) and the cost granted is
// ratelimit_cost_total{decision="allowed"}. Cost given back by Refund (the
// Collector is a ratelimit.RefundSubscriber) is counted apart, in
// ratelimit_cost_refunded_total, so that the cost actually used is granted
// minus refunded; a refund Redis failed counts in
// ratelimit_refund_errors_total, not in the backend errors of decisions.
// When a limiter first publishes,
// its allowed and blocked series for reason "quota" are created at zero, so
// that ratios over them exist before the first block.
//
// The duration histogram has classic buckets from 25µs to 1s (a healthy
// Redis round trip on a LAN takes 20 to 500µs) and native-histogram
// settings (bucket factor 1.1, at most 160 buckets): the exposition carries
// both. Which one Prometheus stores depends on its scrape settings: the
// Prometheus 2.42 of the e2e test, with --enable-feature=native-histograms,
// keeps only the native histogram (no _bucket series); without the flag,
// only the classic one. The dashboards and alerts in dashboards/ query
// classic "or" native, so either works.
//
// # Exemplars
//
// When the context of a decision holds a sampled OpenTelemetry span, the
// duration observation carries an exemplar with the span's trace_id and
// span_id, so that a latency spike in Grafana links to its trace. Each
// classic bucket of a series takes at most one exemplar a second:
// Prometheus keeps only the last one per
// bucket anyway, and an exemplar costs about a microsecond and a dozen
// allocations. The exemplar names the caller's span (the request), in whose
// trace the otel package's decision span is a child. Exemplars are only
// exposed in the OpenMetrics format (and protobuf): serve the
// registry with
//
//	promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
//
// and start Prometheus with --enable-feature=exemplar-storage.
//
// # Drops
//
// Events a telemetry.Async subscriber drops are counted by the subscriber
// Dropped returns:
//
//	async := telemetry.Async(slow, 1024, telemetry.WithDropped(metrics.Dropped("slog")))
//
// # Cost
//
// Each event costs a few atomic additions and, after a combination of
// namespace and algorithm is first seen, no allocation: the child metrics
// are resolved once and cached. Only an exemplar allocates.
package prom
