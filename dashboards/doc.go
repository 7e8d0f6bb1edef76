// Package dashboards holds the Grafana dashboards and Prometheus alerting
// rules for the metrics of the telemetry/prom package; it has no Go API.
//
// The shipped artifacts are the files beside this one:
//
//	ratelimit-overview.json       Grafana dashboard: decisions, blocks, cost, fail-open/closed, errors, drops
//	ratelimit-redis.json          Grafana dashboard: Redis round-trip latency (with exemplars), errors
//	ratelimit-*.layout.svg        a diagram of each dashboard's grid, drawn from its JSON
//	alerts.yml, alerts_test.yml   Prometheus alerting rules and their promtool unit tests
//
// The dashboards are generated with Grafana's own dashboards-as-code
// library, grafana-foundation-sdk, by the command in gen/: a module of its
// own, so that this module's go.mod (which users import) does not grow the
// SDK. Both dashboards share one definition of every query and panel
// convention there, and panel ids and grid positions are computed rather
// than typed:
//
//	go generate ./dashboards                  # rewrites the JSON and SVG files (runs gen/)
//	cd dashboards/gen && go test ./...        # committed files are generated and pass the SDK's strict parse
//	go test ./dashboards                      # structure, PromQL and alert rules of the committed files
//
// README.md in this directory explains how to import and provision them;
// e2e/ (a module of its own) runs every query and rule against a real
// Prometheus scraping the demo server, and checks the traces in Jaeger.
package dashboards

//go:generate go -C gen run .
