// Package e2e proves the dashboards, the alert rules and the tracing of
// ratelimit-go end to end, against real processes on loopback:
//
//   - redis-server, behind a small TCP proxy of the test's that can stall
//     or reset connections (a Redis outage on demand);
//   - two instances of the demo server examples/httpserver (built from the
//     library module), both with their load generator, one failing open
//     behind a circuit breaker (-breaker) and one failing closed,
//     exporting traces over OTLP/HTTP;
//   - Jaeger v2 (all-in-one, in-memory), built as a Go tool from the
//     module in tools/ so that its dependencies stay out of the library's
//     go.mod and this one;
//   - in the test process, a limiter of the library's own whose
//     telemetry.Async subscriber hangs, for ratelimit_events_dropped_total
//     (the demo subscribes synchronously and drops nothing);
//   - two Debian prometheus servers scraping all of them every second with
//     dashboards/alerts.yml loaded: one with exemplar storage (classic
//     histograms), one with native histograms.
//
// The test then evaluates every query of every panel of every dashboard
// (with the Grafana variables replaced as Grafana would) and every alert
// expression on both Prometheus servers, checks that every alert became
// active, that the decision spans in Jaeger carry the ratelimit.*
// attributes and are children of the HTTP server spans, and that the
// latency histogram's exemplars name traces Jaeger has.
//
//	cd e2e && go test -v -count=1 ./...
//
// A missing redis-server or prometheus skips the test, unless
// RATELIMIT_REQUIRE_REDIS=1 (as in CI), which fails it. JAEGER_BIN points
// at a prebuilt Jaeger; otherwise the test builds it with "go tool" (about
// 3.5 minutes on two cores with a cold build cache, seconds when warm).
package e2e
