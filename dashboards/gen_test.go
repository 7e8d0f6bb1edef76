package dashboards

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

var update = flag.Bool("update", false, "rewrite the generated dashboards and layout diagrams")

// The metric selectors, by the names telemetry/prom exports.
var (
	decisions = func(m ...string) string { return sel(prom.DecisionsName, m...) }
	cost      = func(m ...string) string { return sel(prom.CostName, m...) }
	errs      = func(m ...string) string { return sel(prom.BackendErrorsName, m...) }
	dropped   = func(m ...string) string { return sel(prom.DroppedName, m...) }
	circuit   = func(m ...string) string { return sel(prom.CircuitOpenName, m...) }
	switches  = func(m ...string) string { return sel(prom.CircuitTransitionsName, m...) }
	refunded  = func(m ...string) string { return sel(prom.RefundedName, m...) }
	durName   = prom.BackendDurationName
)

const (
	isBlocked = `decision="blocked"`
	isAllowed = `decision="allowed"`
)

// blockRatio is the share of decisions that were blocked, for any reason
// (quota or fail-closed): what the callers experienced.
func blockRatio(by string) string {
	return sumBy(by, rate(decisions(isBlocked))) + " / " + sumBy(by, rate(decisions()))
}

// quantile is the q-quantile of the backend round trip. The left side reads
// the classic buckets (what Prometheus scrapes by default, and where
// exemplars are); the right side the native histogram, for a Prometheus that
// scrapes native histograms only (2.x with the native-histograms feature,
// 3.x with scrape_native_histograms and no classic buckets). Only one side
// has data on a given server; when both do, "or" keeps the classic one.
func quantile(q, by string) string {
	classicBy := "le"
	if by != "" {
		classicBy = by + ", le"
	}
	return "histogram_quantile(" + q + ", " + sumBy(classicBy, rate(sel(durName+"_bucket"))) + ")" +
		" or histogram_quantile(" + q + ", " + sumBy(by, rate(sel(durName))) + ")"
}

// roundTrips counts Redis round trips (the histogram's count), classic or
// native.
func roundTrips(by string) string {
	return sumBy(by, rate(sel(durName+"_count"))) + " or " + sumBy(by, "histogram_count("+rate(sel(durName))+")")
}

// meanRoundTrip is the mean Redis round trip, classic or native.
func meanRoundTrip() string {
	return sumBy("", rate(sel(durName+"_sum"))) + " / " + sumBy("", rate(sel(durName+"_count"))) +
		" or " + sumBy("", "histogram_sum("+rate(sel(durName))+")") + " / " + sumBy("", "histogram_count("+rate(sel(durName))+")")
}

func overview() *dashboard {
	b := newBoard("ratelimit-overview", "ratelimit-go / Overview",
		"Rate-limit decisions of ratelimit-go limiters: traffic, blocks, cost, fail-open and fail-closed decisions, backend errors, dropped events and circuit breakers. Metrics from the telemetry/prom package.")

	b.add(6, 4, stat("Decisions per second",
		"How many rate-limit decisions the selected namespaces make, all instances together.",
		"ops", query{expr: sumBy("", rate(decisions()))}))
	b.add(6, 4, stat("Block ratio",
		"The share of decisions that were blocked (by the quota, or by Redis failing under fail-closed). Yellow from 10%, red from 50%.",
		"percentunit", query{expr: blockRatio("")}, 0.1, "yellow", 0.5, "red"))
	b.add(6, 4, stat("Fail-open decisions per second",
		"Decisions allowed only because Redis failed and the limiter fails open: while this is above zero the limits are not enforced. Red above zero.",
		"ops", query{expr: sumBy("", rate(decisions(`reason="fail_open"`)))}, 1e-9, "red"))
	b.add(6, 4, stat("Backend errors per second",
		"Decisions whose Redis call failed (timeout, connection, script, canceled, other) or that an open circuit breaker kept from Redis (circuit_open). Red above zero.",
		"ops", query{expr: sumBy("", rate(errs()))}, 1e-9, "red"))

	allowedBlocked := timeseries("Decisions per second: allowed vs blocked",
		"Is traffic being limited, and how much? Allowed and blocked decisions per second, stacked.",
		"ops", query{expr: sumBy("decision", rate(decisions())), legend: "{{decision}}"})
	allowedBlocked.FieldConfig.Defaults["custom"].(map[string]any)["stacking"] = map[string]any{"group": "A", "mode": "normal"}
	allowedBlocked.FieldConfig.Overrides = []map[string]any{colorOverride("allowed", "green"), colorOverride("blocked", "red")}
	b.add(12, 8, allowedBlocked)
	b.add(12, 8, timeseries("Cost per second: requested, granted, refunded",
		"How many cost units (tokens, bytes, GPU units: whatever AllowN charges) each namespace was asked for, how many it granted, and how many callers gave back with Refund (reserved, then not used). Requested minus granted was refused; granted minus refunded was used.",
		"suffix: units/s",
		query{expr: sumBy("namespace", rate(cost(isAllowed))), legend: "{{namespace}} granted"},
		query{expr: sumBy("namespace", rate(cost())), legend: "{{namespace}} requested"},
		query{expr: sumBy("namespace", rate(refunded())), legend: "{{namespace}} refunded"}))

	b.add(12, 8, ratioPanel(timeseries("Block ratio per namespace",
		"Which limits are biting? The share of each namespace's decisions that were blocked.",
		"percentunit", query{expr: blockRatio("namespace"), legend: "{{namespace}}"})))
	b.add(12, 8, ratioPanel(timeseries("Block ratio per algorithm",
		"The share of decisions blocked, per limiting algorithm.",
		"percentunit", query{expr: blockRatio("algorithm"), legend: "{{algorithm}}"})))

	b.add(12, 8, topNamespaces())
	failures := timeseries("Fail-open and fail-closed decisions per second",
		"Decisions the fail strategy made because Redis failed: fail_open ones were allowed without a limit, fail_closed ones were refused (the caller got an error response).",
		"ops", query{expr: sumBy("namespace, reason", rate(decisions(`reason=~"fail_open|fail_closed"`))), legend: "{{namespace}} {{reason}}"})
	b.add(12, 8, failures)

	b.add(12, 8, timeseries("Backend errors per second by type",
		"Why Redis calls fail: timeout (the limiter's backend timeout passed), connection, script, canceled (the caller gave up) or other; circuit_open counts calls an open circuit breaker kept from Redis.",
		"ops", query{expr: sumBy("type", rate(errs())), legend: "{{type}}"}))
	b.add(12, 8, timeseries("Events dropped per second",
		"Decision events a telemetry.Async subscriber dropped because its queue was full: the subscriber (logs, for example) misses them; the limiter's decisions are unaffected.",
		"ops", query{expr: sumBy("subscriber", rate(dropped())), legend: "{{subscriber}}"}))

	// Circuit breakers (ratelimit.WithBreaker): the series exist once a
	// limiter's breaker first changed state. The gauge is taken once per
	// instance: a MultiLimiter has a series per algorithm.
	b.add(12, 8, timeseries("Instances skipping Redis (circuit breaker open)",
		"How many instances of each namespace have their circuit breaker open or half-open: they skip Redis and the fail strategy decides every call at once. Empty for limiters without ratelimit.WithBreaker, or whose breaker never opened.",
		"short", query{expr: sumBy("namespace", "max by (namespace, instance) ("+circuit()+")"), legend: "{{namespace}}"}))
	b.add(12, 8, timeseries("Circuit breaker state changes",
		"Circuit breaker state changes per namespace, by the state changed to: open (Redis failed repeatedly, or a probe failed), half_open (a cool-down ended: one call probes Redis), closed (the probe succeeded). Repeated opens mean Redis keeps failing.",
		"short", query{expr: sumBy("namespace, to", "increase("+switches()+"[$__rate_interval])"), legend: "{{namespace}} to {{to}}"}))
	return b.done()
}

// ratioPanel bounds a ratio chart to [0, 1].
func ratioPanel(p *panel) *panel {
	p.FieldConfig.Defaults["max"] = 1
	return p
}

// topNamespaces is a table of the namespaces that blocked the largest share
// of their decisions over the dashboard's time range.
func topNamespaces() *panel {
	inRange := func(s string) string { return "increase(" + s + "[$__range])" }
	ratio := "topk(10, " + sumBy("namespace", inRange(decisions(isBlocked))) + " / " + sumBy("namespace", inRange(decisions())) + ")"
	perSecond := sumBy("namespace", rate(decisions()))
	p := &panel{
		Type:        "table",
		Title:       "Top namespaces by block ratio",
		Description: "The ten namespaces that blocked the largest share of their decisions over the selected time range, with their current decision rate.",
		FieldConfig: fieldConfig{
			Defaults: map[string]any{
				"color":      map[string]any{"mode": "thresholds"},
				"custom":     map[string]any{"align": "auto", "cellOptions": map[string]any{"type": "auto"}, "inspect": false},
				"thresholds": thresholds(0.1, "yellow", 0.5, "red"),
				"unit":       "short",
			},
			Overrides: []map[string]any{
				{
					"matcher": map[string]any{"id": "byName", "options": "Block ratio"},
					"properties": []map[string]any{
						{"id": "unit", "value": "percentunit"},
						{"id": "min", "value": 0},
						{"id": "max", "value": 1},
						{"id": "custom.cellOptions", "value": map[string]any{"mode": "gradient", "type": "gauge"}},
					},
				},
				{
					"matcher":    map[string]any{"id": "byName", "options": "Decisions/s"},
					"properties": []map[string]any{{"id": "unit", "value": "ops"}},
				},
			},
		},
		Options: map[string]any{
			"cellHeight": "sm",
			"footer":     map[string]any{"countRows": false, "fields": "", "reducer": []string{"sum"}, "show": false},
			"showHeader": true,
			"sortBy":     []map[string]any{{"desc": true, "displayName": "Block ratio"}},
		},
		Targets: []target{
			{Expr: ratio, Format: "table", Instant: true, LegendFormat: "__auto"},
			{Expr: perSecond, Format: "table", Instant: true, LegendFormat: "__auto"},
		},
		Transformations: []map[string]any{
			{"id": "merge", "options": map[string]any{}},
			{"id": "organize", "options": map[string]any{
				"excludeByName": map[string]any{"Time": true},
				"indexByName":   map[string]any{"namespace": 0, "Value #A": 1, "Value #B": 2},
				"renameByName":  map[string]any{"namespace": "Namespace", "Value #A": "Block ratio", "Value #B": "Decisions/s"},
			}},
		},
	}
	return p
}

func redisBackend() *dashboard {
	b := newBoard("ratelimit-redis", "ratelimit-go / Redis backend",
		"The Redis round trip of ratelimit-go decisions: latency percentiles and heatmap from ratelimit_backend_duration_seconds (with exemplars linking to traces), error rate and error types. Metrics from the telemetry/prom package.")

	b.add(6, 4, stat("p99 round trip",
		"99% of the limiters' Redis calls took less than this. A healthy Redis on the same network answers in well under a millisecond; yellow from 5 ms, red from 25 ms (a quarter of the default 100 ms backend timeout).",
		"s", query{expr: quantile("0.99", "")}, 0.005, "yellow", 0.025, "red"))
	b.add(6, 4, stat("Mean round trip",
		"The mean duration of the limiters' Redis calls.",
		"s", query{expr: meanRoundTrip()}, 0.005, "yellow", 0.025, "red"))
	b.add(6, 4, stat("Error ratio",
		"The share of decisions whose Redis call failed (the fail strategy then decided). Red from 1%.",
		"percentunit", query{expr: sumBy("", rate(errs())) + " / " + sumBy("", rate(decisions()))}, 0.001, "yellow", 0.01, "red"))
	b.add(6, 4, stat("Round trips per second",
		"How many Redis calls the limiters make: one per decision.",
		"ops", query{expr: roundTrips("")}))

	latency := timeseries("Round-trip latency p50 / p95 / p99",
		"How long a decision's Redis call takes, per namespace. Exemplars (the dots, with exemplar storage on in Prometheus) link a point to the trace of one slow request.",
		"s",
		query{expr: quantile("0.5", "namespace"), legend: "{{namespace}} p50", exemplar: true},
		query{expr: quantile("0.95", "namespace"), legend: "{{namespace}} p95", exemplar: true},
		query{expr: quantile("0.99", "namespace"), legend: "{{namespace}} p99", exemplar: true})
	b.add(24, 9, latency)

	b.add(12, 9, heatmap())
	b.add(12, 9, timeseries("Backend errors per second by type",
		"Why Redis calls fail, per namespace: timeout, connection, script, canceled or other; circuit_open counts calls an open circuit breaker kept from Redis.",
		"ops", query{expr: sumBy("namespace, type", rate(errs())), legend: "{{namespace}} {{type}}"}))

	b.add(12, 8, ratioPanel(timeseries("Error ratio per namespace",
		"The share of each namespace's decisions whose Redis call failed.",
		"percentunit", query{expr: sumBy("namespace", rate(errs())) + " / " + sumBy("namespace", rate(decisions())), legend: "{{namespace}}"})))
	b.add(12, 8, timeseries("Round trips per second per namespace",
		"Redis calls per second per namespace: the load the limiters put on Redis.",
		"ops", query{expr: roundTrips("namespace"), legend: "{{namespace}}"}))
	return b.done()
}

// heatmap shows the distribution of round-trip durations over time from the
// classic buckets (Grafana turns the cumulative le buckets into cells), with
// exemplars.
func heatmap() *panel {
	return &panel{
		Type:        "heatmap",
		Title:       "Round-trip latency heatmap",
		Description: "The distribution of Redis round-trip durations over time (all selected namespaces), from the histogram's classic buckets; exemplars mark single requests with their trace.",
		FieldConfig: fieldConfig{
			Defaults: map[string]any{
				"custom": map[string]any{
					"hideFrom":          map[string]any{"legend": false, "tooltip": false, "viz": false},
					"scaleDistribution": map[string]any{"type": "linear"},
				},
			},
			Overrides: []map[string]any{},
		},
		Options: map[string]any{
			"calculate":  false,
			"cellGap":    1,
			"cellValues": map[string]any{"unit": "short"},
			"color": map[string]any{
				"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": false,
				"scale": "exponential", "scheme": "Oranges", "steps": 64,
			},
			"exemplars":    map[string]any{"color": "rgba(255,0,255,0.7)"},
			"filterValues": map[string]any{"le": 1e-9},
			"legend":       map[string]any{"show": true},
			"rowsFrame":    map[string]any{"layout": "le"},
			"showValue":    "never",
			"tooltip":      map[string]any{"mode": "single", "showColorScale": false, "yHistogram": true},
			"yAxis":        map[string]any{"axisPlacement": "left", "reverse": false, "unit": "s"},
		},
		Targets: []target{{
			Expr:         sumBy("le", "increase("+sel(durName+"_bucket")+"[$__rate_interval])"),
			Exemplar:     true,
			Format:       "heatmap",
			LegendFormat: "{{le}}",
			Range:        true,
		}},
	}
}

// generated returns each dashboard's file name and its JSON.
func generated(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, d := range map[string]*dashboard{
		"ratelimit-overview.json": overview(),
		"ratelimit-redis.json":    redisBackend(),
	} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // keep "<" and "&" in descriptions readable
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			t.Fatal(err)
		}
		out[name] = buf.Bytes()
	}
	return out
}

// TestGenerated fails when a committed dashboard or layout diagram differs
// from what the generator makes; go generate (-update) rewrites them.
func TestGenerated(t *testing.T) {
	for name, js := range generated(t) {
		checkGolden(t, name, js)
		checkGolden(t, strings.TrimSuffix(name, ".json")+".layout.svg", layoutSVG(t, name, js))
	}
}

// checkGolden compares the file name with want, or writes it under -update.
func checkGolden(t *testing.T, name string, want []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(filepath.Clean(name))
	if err != nil {
		t.Fatalf("%v (run go generate ./dashboards)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run go generate ./dashboards and commit the result", name)
	}
}
