// Package obsbench measures the cost of observability: Allow on a real
// redis-server with no subscriber, with each of the slog, Prometheus and
// OpenTelemetry subscribers alone, and with all three. It holds only tests
// and benchmarks; it exists so that the three subscriber packages, which
// must not import each other, can be measured side by side.
//
//	go test -run '^$' -bench . -count 6 ./internal/obsbench
package obsbench
