package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// These tests read the committed files, not the generator (dashboards/gen,
// a module of its own): they check what a user imports. The values below
// are what the files must have, written out again rather than taken from
// the generator, so that a change there that breaks one is caught here.

// schemaVersion is the classic model's version the files declare: Grafana
// 10.4 writes 39 and every later version migrates it forward on load.
const schemaVersion = 39

// gridWidth is the width of Grafana's grid, in columns.
const gridWidth = 24

// dsInput is the import-time input Grafana's import dialog asks for.
const dsInput = "DS_PROMETHEUS"

// dsVar is the data-source variable every panel and target uses.
const dsVar = "${datasource}"

// namespaceQuery is the namespace variable's query.
const namespaceQuery = `label_values(ratelimit_decisions_total, namespace)`

// nsMatcher filters every selector by the namespace variable.
const nsMatcher = `namespace=~"$namespace"`

type gridPos struct{ H, W, X, Y int }

// allowedPanels are the panel types of Grafana's current (React) panel set;
// the Angular graph and singlestat panels were removed in Grafana 11.
var allowedPanels = []string{"timeseries", "stat", "heatmap", "table"}

// knownMetrics are the series the exporter writes that the dashboards and
// rules may use: the counters, the circuit breaker's gauge and counter, and
// the histogram's classic series and native name.
var knownMetrics = []string{
	prom.DecisionsName, prom.CostName, prom.BackendErrorsName, prom.DroppedName,
	prom.CircuitOpenName, prom.CircuitTransitionsName, prom.RefundedName,
	prom.BackendDurationName, prom.BackendDurationName + "_bucket",
	prom.BackendDurationName + "_sum", prom.BackendDurationName + "_count",
}

var (
	uidRE      = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,40}$`)
	metricRE   = regexp.MustCompile(`\bratelimit_[a-z_]+`)
	rangeRE    = regexp.MustCompile(`\[([^\]]*)\]`)
	variableRE = regexp.MustCompile(`\$\{?(\w+)`)
)

// committed is one dashboard file as a user gets it.
type committed struct {
	file string
	raw  []byte
	d    map[string]any
}

func committedDashboards(t *testing.T) []committed {
	t.Helper()
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("dashboards: %v, want the overview and the Redis dashboard", files)
	}
	var out []committed
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, committed{f, raw, d})
	}
	return out
}

func TestDashboardStructure(t *testing.T) {
	uids, titles := map[string]string{}, map[string]string{}
	for _, c := range committedDashboards(t) {
		t.Run(c.file, func(t *testing.T) {
			d := c.d
			if v, ok := d["schemaVersion"].(float64); !ok || v != schemaVersion {
				t.Errorf("schemaVersion = %v, want %d", d["schemaVersion"], schemaVersion)
			}
			if id, ok := d["id"]; !ok || id != nil {
				t.Errorf("id = %v, want null (Grafana assigns it)", id)
			}
			uid, _ := d["uid"].(string)
			if !uidRE.MatchString(uid) {
				t.Errorf("uid %q: want 1 to 40 letters, digits, - or _", uid)
			}
			if other, dup := uids[uid]; dup {
				t.Errorf("uid %q also in %s", uid, other)
			}
			uids[uid] = c.file
			title, _ := d["title"].(string)
			if title == "" {
				t.Error("no title")
			}
			if other, dup := titles[title]; dup {
				t.Errorf("title %q also in %s", title, other)
			}
			titles[title] = c.file

			checkInputs(t, d)
			// The import input appears once, as the data-source variable's
			// default; everything else uses the variable, so the file
			// also works when provisioned (no import dialog).
			if n := strings.Count(string(c.raw), "${"+dsInput+"}"); n != 1 {
				t.Errorf("${%s} appears %d times, want once (the datasource variable's default)", dsInput, n)
			}
			vars := checkVariables(t, d)
			panels := listOf(d["panels"])
			if len(panels) == 0 {
				t.Fatal("no panels")
			}
			types := checkPanels(t, panels, vars)
			checkRequires(t, d, types)
		})
	}
}

func checkInputs(t *testing.T, d map[string]any) {
	t.Helper()
	inputs := listOf(d["__inputs"])
	if len(inputs) != 1 {
		t.Fatalf("__inputs = %v, want one Prometheus data source", d["__inputs"])
	}
	in := inputs[0]
	if in["name"] != dsInput || in["type"] != "datasource" || in["pluginId"] != "prometheus" {
		t.Errorf("__inputs[0] = %v", in)
	}
}

// checkVariables checks the datasource and namespace variables and returns
// the names of all variables.
func checkVariables(t *testing.T, d map[string]any) map[string]bool {
	t.Helper()
	templ, _ := d["templating"].(map[string]any)
	vars := map[string]map[string]any{}
	for _, v := range listOf(templ["list"]) {
		name, _ := v["name"].(string)
		vars[name] = v
	}
	ds := vars["datasource"]
	if ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("datasource variable = %v", ds)
	} else if cur, _ := ds["current"].(map[string]any); cur["value"] != "${"+dsInput+"}" {
		t.Errorf("datasource variable defaults to %v, want the import input", cur)
	}
	ns := vars["namespace"]
	if ns == nil {
		t.Fatal("no namespace variable")
	}
	q, _ := ns["query"].(map[string]any)
	if ns["type"] != "query" || ns["multi"] != true || ns["includeAll"] != true ||
		ns["definition"] != namespaceQuery || q["query"] != namespaceQuery {
		t.Errorf("namespace variable = %v", ns)
	}
	checkDatasource(t, "namespace variable", ns["datasource"])
	names := map[string]bool{}
	for n := range vars {
		names[n] = true
	}
	return names
}

func checkDatasource(t *testing.T, what string, v any) {
	t.Helper()
	ds, _ := v.(map[string]any)
	if ds["type"] != "prometheus" || ds["uid"] != dsVar {
		t.Errorf("%s: datasource %v, want {prometheus %s}", what, v, dsVar)
	}
}

// checkPanels checks every panel and target and returns the panel types.
func checkPanels(t *testing.T, panels []map[string]any, vars map[string]bool) map[string]bool {
	t.Helper()
	ids := map[int]bool{}
	types := map[string]bool{}
	var boxes []gridPos
	for i, p := range panels {
		title, _ := p["title"].(string)
		what := fmt.Sprintf("panel %d %q", i, title)
		typ, _ := p["type"].(string)
		if !slices.Contains(allowedPanels, typ) {
			t.Errorf("%s: type %q, want one of %v", what, typ, allowedPanels)
		}
		types[typ] = true
		id, ok := p["id"].(float64)
		if !ok || id < 1 || id != float64(int(id)) || ids[int(id)] {
			t.Errorf("%s: id %v missing, not a positive integer or duplicated", what, p["id"])
		}
		ids[int(id)] = true
		if title == "" || p["description"] == "" || p["description"] == nil {
			t.Errorf("%s: want a title and a description (what the panel answers)", what)
		}
		checkDatasource(t, what, p["datasource"])
		if typ != "heatmap" {
			fc, _ := p["fieldConfig"].(map[string]any)
			def, _ := fc["defaults"].(map[string]any)
			if u, _ := def["unit"].(string); u == "" {
				t.Errorf("%s: no unit", what)
			}
		}

		gp, ok := gridOf(p["gridPos"])
		if !ok || gp.X < 0 || gp.Y < 0 || gp.W < 1 || gp.H < 1 || gp.X+gp.W > gridWidth {
			t.Errorf("%s: gridPos %v outside the %d-column grid", what, p["gridPos"], gridWidth)
		}
		for j, o := range boxes {
			if overlap(gp, o) {
				t.Errorf("%s: gridPos %+v overlaps panel %d's %+v", what, gp, j, o)
			}
		}
		boxes = append(boxes, gp)

		targets := listOf(p["targets"])
		if len(targets) == 0 {
			t.Errorf("%s: no targets", what)
		}
		refs := map[string]bool{}
		for _, tg := range targets {
			ref, _ := tg["refId"].(string)
			if ref == "" || refs[ref] {
				t.Errorf("%s: refId %q empty or duplicated", what, ref)
			}
			refs[ref] = true
			checkDatasource(t, what+" target "+ref, tg["datasource"])
			expr, _ := tg["expr"].(string)
			if strings.TrimSpace(expr) == "" {
				t.Errorf("%s target %s: no expr", what, ref)
				continue
			}
			instant, _ := tg["instant"].(bool)
			for _, problem := range exprProblems(expr, instant, vars) {
				t.Errorf("%s target %s: %s\n\t%s", what, ref, problem, expr)
			}
			latency := strings.Contains(expr, prom.BackendDurationName+"_bucket")
			if latency && (typ == "timeseries" || typ == "heatmap") && tg["exemplar"] != true {
				t.Errorf("%s target %s: a latency query without exemplars", what, ref)
			}
		}
	}
	return types
}

// exprProblems lists what is wrong with a panel's PromQL.
func exprProblems(expr string, instant bool, vars map[string]bool) []string {
	var out []string
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		out = append(out, "unbalanced brackets")
	}
	for _, m := range rangeRE.FindAllStringSubmatch(expr, -1) {
		switch {
		case m[1] == "$__rate_interval":
		case m[1] == "$__range" && instant:
		default:
			out = append(out, fmt.Sprintf("range [%s]: want [$__rate_interval] ([$__range] in instant queries)", m[1]))
		}
	}
	for _, loc := range metricRE.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if !slices.Contains(knownMetrics, name) {
			out = append(out, fmt.Sprintf("unknown metric %s", name))
		}
		if !strings.HasPrefix(expr[loc[1]:], `{`+nsMatcher) {
			out = append(out, fmt.Sprintf("%s is not filtered by %s", name, nsMatcher))
		}
	}
	for _, m := range variableRE.FindAllStringSubmatch(expr, -1) {
		if !strings.HasPrefix(m[1], "__") && !vars[m[1]] {
			out = append(out, fmt.Sprintf("undefined variable $%s", m[1]))
		}
	}
	return out
}

func TestExprProblemsCatches(t *testing.T) {
	vars := map[string]bool{"namespace": true}
	for expr, want := range map[string]string{
		`sum(rate(ratelimit_decisions_total{namespace=~"$namespace"}[$__rate_interval]))`:  "",
		`sum(rate(ratelimit_decisions_total{namespace=~"$namespace"}[5m]))`:                "range [5m]",
		`sum(increase(ratelimit_decisions_total{namespace=~"$namespace"}[$__range]))`:      "range [$__range]",
		`sum(rate(ratelimit_decisions_total[$__rate_interval]))`:                           "not filtered",
		`sum(rate(ratelimit_decisions{namespace=~"$namespace"}[$__rate_interval]))`:        "unknown metric",
		`sum(rate(ratelimit_decisions_total{namespace=~"$namespace"}[$__rate_interval])`:   "unbalanced",
		`sum(rate(ratelimit_decisions_total{namespace=~"$namespace",x="$job"}[$__range]))`: "undefined variable $job",
	} {
		got := strings.Join(exprProblems(expr, false, vars), "; ")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("exprProblems(%s) = %q, want %q", expr, got, want)
		}
	}
}

func checkRequires(t *testing.T, d map[string]any, types map[string]bool) {
	t.Helper()
	panelsRequired := map[string]bool{}
	var grafana, datasource bool
	for _, r := range listOf(d["__requires"]) {
		switch r["type"] {
		case "grafana":
			v, _ := r["version"].(string)
			grafana = versionAtLeast(v, 10, 4)
			if !grafana {
				t.Errorf("__requires grafana %q, want 10.4 or later", v)
			}
		case "datasource":
			datasource = r["id"] == "prometheus"
		case "panel":
			id, _ := r["id"].(string)
			panelsRequired[id] = true
		}
	}
	if !grafana || !datasource {
		t.Errorf("__requires lacks grafana or the prometheus data source: %v", d["__requires"])
	}
	for typ := range types {
		if !panelsRequired[typ] {
			t.Errorf("__requires lacks panel %q", typ)
		}
	}
	for typ := range panelsRequired {
		if !types[typ] {
			t.Errorf("__requires lists panel %q, which no panel uses", typ)
		}
	}
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (ma > major || ma == major && mi >= minor)
}

func overlap(a, b gridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

func TestOverlap(t *testing.T) {
	a := gridPos{X: 0, Y: 0, W: 12, H: 8}
	for _, c := range []struct {
		b    gridPos
		want bool
	}{
		{gridPos{X: 12, Y: 0, W: 12, H: 8}, false},
		{gridPos{X: 0, Y: 8, W: 24, H: 8}, false},
		{gridPos{X: 11, Y: 7, W: 2, H: 2}, true},
		{gridPos{X: 0, Y: 0, W: 12, H: 8}, true},
	} {
		if got := overlap(a, c.b); got != c.want {
			t.Errorf("overlap(%+v, %+v) = %v", a, c.b, got)
		}
	}
}

func gridOf(v any) (gridPos, bool) {
	m, _ := v.(map[string]any)
	var g gridPos
	ok := true
	for k, dst := range map[string]*int{"x": &g.X, "y": &g.Y, "w": &g.W, "h": &g.H} {
		f, isNum := m[k].(float64)
		ok = ok && isNum && f == float64(int(f))
		*dst = int(f)
	}
	return g, ok
}

func listOf(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// TestDashboardPromQLParses has promtool parse every panel query, with the
// Grafana variables replaced as Grafana would. (e2e/ runs them against a
// real Prometheus with data.)
func TestDashboardPromQLParses(t *testing.T) {
	promtool := redistest.Binary(t, "promtool")
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard-queries\n  rules:\n")
	n := 0
	for _, c := range committedDashboards(t) {
		for _, p := range listOf(c.d["panels"]) {
			for _, tg := range listOf(p["targets"]) {
				expr, _ := tg["expr"].(string)
				n++
				js, _ := json.Marshal(substitute(expr))
				fmt.Fprintf(&rules, "  - record: dashboard_query_%d\n    expr: %s\n", n, js)
			}
		}
	}
	file := filepath.Join(t.TempDir(), "queries.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d rules found", n)) {
		t.Errorf("promtool did not check %d queries:\n%s", n, out)
	}
}

// substitute replaces the dashboard variables in expr by values Grafana
// could give them.
func substitute(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "1m",
		"$__range", "1h",
		"$namespace", "api|llm",
	).Replace(expr)
}
