package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// panelQuery is one target of one dashboard panel, as shipped.
type panelQuery struct {
	Dashboard string // file name
	Panel     string // title
	PanelType string
	RefID     string
	Expr      string
	Instant   bool
	Exemplar  bool
}

func (q panelQuery) String() string {
	return fmt.Sprintf("%s / %s / %s", strings.TrimSuffix(q.Dashboard, ".json"), q.Panel, q.RefID)
}

// dashboardQueries reads every target of every panel of the dashboards in
// dir, and the query of the namespace variable.
func dashboardQueries(t *testing.T, dir string) (queries []panelQuery, variableQueries []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", dir, err)
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Type    string `json:"type"`
				Targets []struct {
					Expr     string `json:"expr"`
					RefID    string `json:"refId"`
					Instant  bool   `json:"instant"`
					Exemplar bool   `json:"exemplar"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				queries = append(queries, panelQuery{
					Dashboard: filepath.Base(f), Panel: p.Title, PanelType: p.Type,
					RefID: tg.RefID, Expr: tg.Expr, Instant: tg.Instant, Exemplar: tg.Exemplar,
				})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			variableQueries = append(variableQueries, s)
		}
	}
	return queries, variableQueries
}

// grafanaVars are the values Grafana gives the variables of a query.
type grafanaVars struct {
	namespaces   []string      // $namespace: all values ("All" selected)
	interval     time.Duration // $__interval: the range query's step
	rateInterval time.Duration // $__rate_interval
	rangeDur     time.Duration // $__range
}

// newGrafanaVars computes the variables as Grafana does for a panel about
// maxDataPoints wide over [start, end] on a data source whose scrape
// interval is scrape: $__interval is the range over the data points,
// rounded to Grafana's nice intervals and at least the scrape interval;
// $__rate_interval is max($__interval + scrape, 4 * scrape).
func newGrafanaVars(namespaces []string, start, end time.Time, scrape time.Duration) grafanaVars {
	const maxDataPoints = 1000
	rng := end.Sub(start).Round(time.Second)
	interval := max(scrape, roundInterval(rng/maxDataPoints))
	return grafanaVars{
		namespaces:   namespaces,
		interval:     interval,
		rateInterval: max(interval+scrape, 4*scrape),
		rangeDur:     rng,
	}
}

// roundInterval rounds d to the intervals Grafana uses (its kbn
// roundInterval table, up to an hour).
func roundInterval(d time.Duration) time.Duration {
	ms := time.Millisecond
	for _, step := range []struct{ below, to time.Duration }{
		{15 * ms, 10 * ms}, {35 * ms, 20 * ms}, {75 * ms, 50 * ms}, {150 * ms, 100 * ms},
		{350 * ms, 200 * ms}, {750 * ms, 500 * ms}, {1500 * ms, time.Second},
		{3500 * ms, 2 * time.Second}, {7500 * ms, 5 * time.Second}, {12500 * ms, 10 * time.Second},
		{17500 * ms, 15 * time.Second}, {25 * time.Second, 20 * time.Second},
		{45 * time.Second, 30 * time.Second}, {90 * time.Second, time.Minute},
		{210 * time.Second, 2 * time.Minute}, {450 * time.Second, 5 * time.Minute},
		{750 * time.Second, 10 * time.Minute}, {1050 * time.Second, 15 * time.Minute},
		{1500 * time.Second, 20 * time.Minute}, {2700 * time.Second, 30 * time.Minute},
	} {
		if d < step.below {
			return step.to
		}
	}
	return time.Hour
}

// expand replaces the variables in expr. A multi-value variable with "All"
// selected becomes the alternation of its values, as Grafana formats it for
// a regex matcher.
func (v grafanaVars) expand(expr string) (string, error) {
	out := strings.NewReplacer(
		"${namespace}", "("+strings.Join(v.namespaces, "|")+")",
		"$namespace", "("+strings.Join(v.namespaces, "|")+")",
		"$__rate_interval", promDuration(v.rateInterval),
		"$__interval", promDuration(v.interval),
		"$__range", promDuration(v.rangeDur),
	).Replace(expr)
	if strings.Contains(out, "$") {
		return "", fmt.Errorf("a variable the test does not know in %q", expr)
	}
	return out, nil
}

func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func TestGrafanaVars(t *testing.T) {
	start := time.Unix(1000, 0)
	v := newGrafanaVars([]string{"api", "llm"}, start, start.Add(90*time.Second), time.Second)
	if v.interval != time.Second || v.rateInterval != 4*time.Second || v.rangeDur != 90*time.Second {
		t.Errorf("90s range, 1s scrape: %+v", v)
	}
	v = newGrafanaVars(nil, start, start.Add(time.Hour), 15*time.Second)
	if v.interval != 15*time.Second || v.rateInterval != time.Minute {
		t.Errorf("1h range, 15s scrape: %+v", v)
	}
	v = newGrafanaVars(nil, start, start.Add(24*time.Hour), 15*time.Second)
	if v.interval != time.Minute || v.rateInterval != 75*time.Second {
		t.Errorf("1d range, 15s scrape: %+v", v)
	}
	got, err := newGrafanaVars([]string{"api", "llm"}, start, start.Add(time.Minute), time.Second).
		expand(`sum(rate(x{namespace=~"$namespace"}[$__rate_interval])) / increase(x[$__range])`)
	if want := `sum(rate(x{namespace=~"(api|llm)"}[4s])) / increase(x[60s])`; err != nil || got != want {
		t.Errorf("expand = %q, %v; want %q", got, err, want)
	}
	if _, err := v.expand(`x{job="$job"}`); err == nil {
		t.Error("an unknown variable was left in the query")
	}
}
