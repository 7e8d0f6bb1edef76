package main

// The PromQL of every panel. Every selector of a ratelimit_* metric is
// filtered by the namespace variable, and every range is $__rate_interval
// (or $__range for the instant table), so that Grafana picks a window that
// holds enough scrapes. The e2e module runs each of these queries against a
// real Prometheus; dashboards/validate_test.go checks the rules above on the
// committed JSON.

import (
	"strings"

	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

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

// namespaceQuery lists the limiters' namespaces: a bounded label (one value
// per limiter the application creates), never an identity.
var namespaceQuery = "label_values(" + prom.DecisionsName + ", namespace)"

const nsMatcher = `namespace=~"$namespace"`

func sel(metric string, matchers ...string) string {
	return metric + "{" + strings.Join(append([]string{nsMatcher}, matchers...), ",") + "}"
}

func rate(selector string) string { return "rate(" + selector + "[$__rate_interval])" }

// sumBy is sum by (labels) (expr), or sum(expr) without labels.
func sumBy(labels, expr string) string {
	if labels == "" {
		return "sum(" + expr + ")"
	}
	return "sum by (" + labels + ") (" + expr + ")"
}

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

// errorRatio is the share of decisions whose Redis call failed.
func errorRatio(by string) string {
	return sumBy(by, rate(errs())) + " / " + sumBy(by, rate(decisions()))
}
