package main

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// newBoard starts a dashboard with what both share: tags, the link between
// them, the datasource and namespace variables, the built-in annotations.
func newBoard(uid, title, description string) *board {
	d := dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Tags([]string{"ratelimit-go", "prometheus"}).
		Time("now-1h", "now").
		// "": the viewer's own time zone preference (the SDK's default,
		// "browser", would override it).
		Timezone("").
		WeekStart("").
		FiscalYearStartMonth(0).
		Version(1).
		Annotation(dashboard.NewAnnotationQueryBuilder().
			Name("Annotations & Alerts").
			BuiltIn(1).
			Datasource(common.DataSourceRef{Type: ptr("grafana"), Uid: ptr("-- Grafana --")}).
			Enable(true).
			Hide(true).
			IconColor("rgba(0, 211, 255, 1)").
			Type("dashboard")).
		Link(dashboard.NewDashboardLinkBuilder("ratelimit-go").
			Type(dashboard.DashboardLinkTypeDashboards).
			Icon("external link").
			IncludeVars(true).
			KeepTime(true).
			Tags([]string{"ratelimit-go"}).
			Tooltip("The other ratelimit-go dashboards")).
		WithVariable(datasourceVariable()).
		WithVariable(namespaceVariable())
	return &board{d: d}
}

// datasourceVariable lets the user pick the Prometheus data source. Its
// default is the import input, so the data source chosen in the import
// dialog becomes the default; when the file is provisioned instead, the
// input is never substituted and Grafana falls back to the default
// Prometheus data source.
func datasourceVariable() cog.Builder[dashboard.VariableModel] {
	return dashboard.NewDatasourceVariableBuilder("datasource").
		Label("Data source").
		Type("prometheus").
		Current(dashboard.VariableOption{
			Selected: ptr(false),
			Text:     dashboard.StringOrArrayOfString{String: ptr("Prometheus")},
			Value:    dashboard.StringOrArrayOfString{String: ptr("${" + dsInput + "}")},
		}).
		Hide(dashboard.VariableHideDontHide).
		IncludeAll(false).
		Multi(false).
		Regex("")
}

func namespaceVariable() cog.Builder[dashboard.VariableModel] {
	return dashboard.NewQueryVariableBuilder("namespace").
		Label("Namespace").
		Datasource(prometheusDS()).
		Definition(namespaceQuery).
		Query(dashboard.StringOrMap{Map: map[string]any{
			"qryType": 1,
			"query":   namespaceQuery,
			"refId":   "PrometheusVariableQueryEditor-VariableQuery",
		}}).
		Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		}).
		Hide(dashboard.VariableHideDontHide).
		IncludeAll(true).
		Multi(true).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged). // a new limiter shows up
		Regex("").
		Sort(dashboard.VariableSortAlphabeticalAsc)
}

func overview() *board {
	b := newBoard("ratelimit-overview", "ratelimit-go / Overview",
		"Rate-limit decisions of ratelimit-go limiters: traffic, blocks, cost, fail-open and fail-closed decisions, backend errors, dropped events and circuit breakers. Metrics from the telemetry/prom package.")

	add(b, 6, 4, statPanel("Decisions per second",
		"How many rate-limit decisions the selected namespaces make, all instances together.",
		"ops", query{expr: sumBy("", rate(decisions()))}))
	add(b, 6, 4, statPanel("Block ratio",
		"The share of decisions that were blocked (by the quota, or by Redis failing under fail-closed). Yellow from 10%, red from 50%.",
		"percentunit", query{expr: blockRatio("")}, step{0.1, "yellow"}, step{0.5, "red"}))
	add(b, 6, 4, statPanel("Fail-open decisions per second",
		"Decisions allowed only because Redis failed and the limiter fails open: while this is above zero the limits are not enforced. Red above zero.",
		"ops", query{expr: sumBy("", rate(decisions(`reason="fail_open"`)))}, step{1e-9, "red"}))
	add(b, 6, 4, statPanel("Backend errors per second",
		"Decisions whose Redis call failed (timeout, connection, script, canceled, other) or that an open circuit breaker kept from Redis (circuit_open). Red above zero.",
		"ops", query{expr: sumBy("", rate(errs()))}, step{1e-9, "red"}))

	add(b, 12, 8, timeseriesPanel("Decisions per second: allowed vs blocked",
		"Is traffic being limited, and how much? Allowed and blocked decisions per second, stacked.",
		"ops", query{expr: sumBy("decision", rate(decisions())), legend: "{{decision}}"}).
		Stacking(common.NewStackingConfigBuilder().Group("A").Mode(common.StackingModeNormal)).
		Overrides([]cog.Builder[dashboard.DashboardFieldConfigSourceOverrides]{
			colorByName("allowed", "green"), colorByName("blocked", "red"),
		}))
	add(b, 12, 8, timeseriesPanel("Cost per second: requested, granted, refunded",
		"How many cost units (tokens, bytes, GPU units: whatever AllowN charges) each namespace was asked for, how many it granted, and how many callers gave back with Refund (reserved, then not used). Requested minus granted was refused; granted minus refunded was used.",
		"suffix: units/s",
		query{expr: sumBy("namespace", rate(cost(isAllowed))), legend: "{{namespace}} granted"},
		query{expr: sumBy("namespace", rate(cost())), legend: "{{namespace}} requested"},
		query{expr: sumBy("namespace", rate(refunded())), legend: "{{namespace}} refunded"}))

	add(b, 12, 8, ratioPanel("Block ratio per namespace",
		"Which limits are biting? The share of each namespace's decisions that were blocked.",
		query{expr: blockRatio("namespace"), legend: "{{namespace}}"}))
	add(b, 12, 8, ratioPanel("Block ratio per algorithm",
		"The share of decisions blocked, per limiting algorithm.",
		query{expr: blockRatio("algorithm"), legend: "{{algorithm}}"}))

	add(b, 12, 8, topNamespaces())
	add(b, 12, 8, timeseriesPanel("Fail-open and fail-closed decisions per second",
		"Decisions the fail strategy made because Redis failed: fail_open ones were allowed without a limit, fail_closed ones were refused (the caller got an error response).",
		"ops", query{expr: sumBy("namespace, reason", rate(decisions(`reason=~"fail_open|fail_closed"`))), legend: "{{namespace}} {{reason}}"}))

	add(b, 12, 8, timeseriesPanel("Backend errors per second by type",
		"Why Redis calls fail: timeout (the limiter's backend timeout passed), connection, script, canceled (the caller gave up) or other; circuit_open counts calls an open circuit breaker kept from Redis.",
		"ops", query{expr: sumBy("type", rate(errs())), legend: "{{type}}"}))
	add(b, 12, 8, timeseriesPanel("Events dropped per second",
		"Decision events a telemetry.Async subscriber dropped because its queue was full: the subscriber (logs, for example) misses them; the limiter's decisions are unaffected.",
		"ops", query{expr: sumBy("subscriber", rate(dropped())), legend: "{{subscriber}}"}))

	// Circuit breakers (ratelimit.WithBreaker): the series exist once a
	// limiter's breaker first changed state. The gauge is taken once per
	// instance: a MultiLimiter has a series per algorithm.
	add(b, 12, 8, timeseriesPanel("Instances skipping Redis (circuit breaker open)",
		"How many instances of each namespace have their circuit breaker open or half-open: they skip Redis and the fail strategy decides every call at once. Empty for limiters without ratelimit.WithBreaker, or whose breaker never opened.",
		"short", query{expr: sumBy("namespace", "max by (namespace, instance) ("+circuit()+")"), legend: "{{namespace}}"}))
	add(b, 12, 8, timeseriesPanel("Circuit breaker state changes",
		"Circuit breaker state changes per namespace, by the state changed to: open (Redis failed repeatedly, or a probe failed), half_open (a cool-down ended: one call probes Redis), closed (the probe succeeded). Repeated opens mean Redis keeps failing.",
		"short", query{expr: sumBy("namespace, to", "increase("+switches()+"[$__rate_interval])"), legend: "{{namespace}} to {{to}}"}))
	return b
}

func redisBackend() *board {
	b := newBoard("ratelimit-redis", "ratelimit-go / Redis backend",
		"The Redis round trip of ratelimit-go decisions: latency percentiles and heatmap from ratelimit_backend_duration_seconds (with exemplars linking to traces), error rate and error types. Metrics from the telemetry/prom package.")

	add(b, 6, 4, statPanel("p99 round trip",
		"99% of the limiters' Redis calls took less than this. A healthy Redis on the same network answers in well under a millisecond; yellow from 5 ms, red from 25 ms (a quarter of the default 100 ms backend timeout).",
		"s", query{expr: quantile("0.99", "")}, step{0.005, "yellow"}, step{0.025, "red"}))
	add(b, 6, 4, statPanel("Mean round trip",
		"The mean duration of the limiters' Redis calls.",
		"s", query{expr: meanRoundTrip()}, step{0.005, "yellow"}, step{0.025, "red"}))
	add(b, 6, 4, statPanel("Error ratio",
		"The share of decisions whose Redis call failed (the fail strategy then decided). Red from 1%.",
		"percentunit", query{expr: errorRatio("")}, step{0.001, "yellow"}, step{0.01, "red"}))
	add(b, 6, 4, statPanel("Round trips per second",
		"How many Redis calls the limiters make: one per decision.",
		"ops", query{expr: roundTrips("")}))

	add(b, 24, 9, timeseriesPanel("Round-trip latency p50 / p95 / p99",
		"How long a decision's Redis call takes, per namespace. Exemplars (the dots, with exemplar storage on in Prometheus) link a point to the trace of one slow request.",
		"s",
		query{expr: quantile("0.5", "namespace"), legend: "{{namespace}} p50", exemplar: true},
		query{expr: quantile("0.95", "namespace"), legend: "{{namespace}} p95", exemplar: true},
		query{expr: quantile("0.99", "namespace"), legend: "{{namespace}} p99", exemplar: true}))

	add(b, 12, 9, latencyHeatmap())
	add(b, 12, 9, timeseriesPanel("Backend errors per second by type",
		"Why Redis calls fail, per namespace: timeout, connection, script, canceled or other; circuit_open counts calls an open circuit breaker kept from Redis.",
		"ops", query{expr: sumBy("namespace, type", rate(errs())), legend: "{{namespace}} {{type}}"}))

	add(b, 12, 8, ratioPanel("Error ratio per namespace",
		"The share of each namespace's decisions whose Redis call failed.",
		query{expr: errorRatio("namespace"), legend: "{{namespace}}"}))
	add(b, 12, 8, timeseriesPanel("Round trips per second per namespace",
		"Redis calls per second per namespace: the load the limiters put on Redis.",
		"ops", query{expr: roundTrips("namespace"), legend: "{{namespace}}"}))
	return b
}
