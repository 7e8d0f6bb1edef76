// Package telemetry holds subscribers for the ratelimit event bus and small
// helpers to compose them:
//
//   - Slog logs every decision with log/slog (allowed at Debug, blocked at
//     Info, backend failures at Warn or Error), to one handler or to several
//     through samber/slog-multi;
//   - Async moves a slow subscriber off the decision path, with a bounded
//     queue, counted drops and a draining Close;
//   - Fanout, Filter and Recover compose subscribers.
//
// The Prometheus and OpenTelemetry subscribers live in the prom and otel
// subpackages, so that importing this package pulls in neither.
package telemetry
