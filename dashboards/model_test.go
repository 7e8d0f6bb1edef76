package dashboards

// The subset of Grafana's classic dashboard JSON model (schemaVersion 39)
// that the two dashboards use. Fields are declared in the order Grafana
// itself writes them, so that a diff against an export from Grafana stays
// small; options are maps because each panel type has its own.

import (
	"fmt"
	"strings"
)

// schemaVersion is the classic model's version the files declare: Grafana
// 10.4 writes 39 and every later version migrates it forward on load.
const schemaVersion = 39

// gridWidth is the width of Grafana's grid, in columns.
const gridWidth = 24

// dsInput is the name of the import-time input: Grafana's import dialog
// asks for a Prometheus data source and substitutes "${DS_PROMETHEUS}".
const dsInput = "DS_PROMETHEUS"

// dsVar is the data-source template variable every panel and target uses,
// so that a provisioned dashboard (no import dialog) follows the default
// Prometheus data source and a user can switch.
const dsVar = "${datasource}"

type dashboard struct {
	Inputs               []input        `json:"__inputs"`
	Elements             map[string]any `json:"__elements"`
	Requires             []require      `json:"__requires"`
	Annotations          annotations    `json:"annotations"`
	Description          string         `json:"description"`
	Editable             bool           `json:"editable"`
	FiscalYearStartMonth int            `json:"fiscalYearStartMonth"`
	GraphTooltip         int            `json:"graphTooltip"`
	ID                   *int           `json:"id"` // always null: Grafana assigns it
	Links                []link         `json:"links"`
	Panels               []*panel       `json:"panels"`
	Refresh              string         `json:"refresh"`
	SchemaVersion        int            `json:"schemaVersion"`
	Tags                 []string       `json:"tags"`
	Templating           templating     `json:"templating"`
	Time                 timeRange      `json:"time"`
	Timepicker           map[string]any `json:"timepicker"`
	Timezone             string         `json:"timezone"`
	Title                string         `json:"title"`
	UID                  string         `json:"uid"`
	Version              int            `json:"version"`
	WeekStart            string         `json:"weekStart"`
}

type input struct {
	Name        string `json:"name"`
	Label       string `json:"label"`
	Description string `json:"description"`
	Type        string `json:"type"`
	PluginID    string `json:"pluginId"`
	PluginName  string `json:"pluginName"`
}

type require struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

type annotations struct {
	List []map[string]any `json:"list"`
}

type link struct {
	AsDropdown  bool     `json:"asDropdown"`
	Icon        string   `json:"icon"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
	Tags        []string `json:"tags"`
	TargetBlank bool     `json:"targetBlank"`
	Title       string   `json:"title"`
	Tooltip     string   `json:"tooltip"`
	Type        string   `json:"type"`
	URL         string   `json:"url"`
}

type templating struct {
	List []map[string]any `json:"list"`
}

type timeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var prometheusDS = dsRef{Type: "prometheus", UID: dsVar}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type fieldConfig struct {
	Defaults  map[string]any   `json:"defaults"`
	Overrides []map[string]any `json:"overrides"`
}

type panel struct {
	Datasource      dsRef            `json:"datasource"`
	Description     string           `json:"description"`
	FieldConfig     fieldConfig      `json:"fieldConfig"`
	GridPos         gridPos          `json:"gridPos"`
	ID              int              `json:"id"`
	Options         map[string]any   `json:"options"`
	Targets         []target         `json:"targets"`
	Title           string           `json:"title"`
	Transformations []map[string]any `json:"transformations,omitempty"`
	Type            string           `json:"type"`
}

type target struct {
	Datasource   dsRef  `json:"datasource"`
	EditorMode   string `json:"editorMode"`
	Exemplar     bool   `json:"exemplar"`
	Expr         string `json:"expr"`
	Format       string `json:"format"`
	Instant      bool   `json:"instant"`
	LegendFormat string `json:"legendFormat"`
	Range        bool   `json:"range"`
	RefID        string `json:"refId"`
}

// query is a target before the board fills in the common fields.
type query struct {
	expr     string
	legend   string
	exemplar bool
}

// board builds one dashboard: it numbers panels and lays them out left to
// right, top to bottom, on the 24-column grid.
type board struct {
	d          *dashboard
	x, y, rowH int
}

func newBoard(uid, title, description string) *board {
	return &board{d: &dashboard{
		Inputs: []input{{
			Name: dsInput, Label: "Prometheus", Type: "datasource",
			Description: "The Prometheus that scrapes the ratelimit_* metrics (telemetry/prom).",
			PluginID:    "prometheus", PluginName: "Prometheus",
		}},
		Elements: map[string]any{},
		Annotations: annotations{List: []map[string]any{{
			"builtIn":    1,
			"datasource": dsRef{Type: "grafana", UID: "-- Grafana --"},
			"enable":     true,
			"hide":       true,
			"iconColor":  "rgba(0, 211, 255, 1)",
			"name":       "Annotations & Alerts",
			"type":       "dashboard",
		}},
		},
		Description:  description,
		Editable:     true,
		GraphTooltip: 1, // shared crosshair
		Links: []link{{
			Icon: "external link", IncludeVars: true, KeepTime: true,
			Tags: []string{"ratelimit-go"}, Title: "ratelimit-go", Type: "dashboards",
			Tooltip: "The other ratelimit-go dashboards",
		}},
		Refresh:       "30s",
		SchemaVersion: schemaVersion,
		Tags:          []string{"ratelimit-go", "prometheus"},
		Templating:    templating{List: []map[string]any{datasourceVariable(), namespaceVariable()}},
		Time:          timeRange{From: "now-1h", To: "now"},
		Timepicker:    map[string]any{},
		Title:         title,
		UID:           uid,
		Version:       1,
	}}
}

// datasourceVariable lets the user pick the Prometheus data source. Its
// default is the import input, so the data source chosen in the import
// dialog becomes the default; when the file is provisioned instead, the
// input is never substituted and Grafana falls back to the default
// Prometheus data source.
func datasourceVariable() map[string]any {
	return map[string]any{
		"current":     map[string]any{"selected": false, "text": "Prometheus", "value": "${" + dsInput + "}"},
		"hide":        0,
		"includeAll":  false,
		"label":       "Data source",
		"multi":       false,
		"name":        "datasource",
		"options":     []any{},
		"query":       "prometheus",
		"queryValue":  "",
		"refresh":     1,
		"regex":       "",
		"skipUrlSync": false,
		"type":        "datasource",
	}
}

// namespaceQuery lists the limiters' namespaces: a bounded label (one value
// per limiter the application creates), never an identity.
const namespaceQuery = `label_values(ratelimit_decisions_total, namespace)`

func namespaceVariable() map[string]any {
	return map[string]any{
		"current":    map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}},
		"datasource": prometheusDS,
		"definition": namespaceQuery,
		"hide":       0,
		"includeAll": true,
		"label":      "Namespace",
		"multi":      true,
		"name":       "namespace",
		"options":    []any{},
		"query": map[string]any{
			"qryType": 1,
			"query":   namespaceQuery,
			"refId":   "PrometheusVariableQueryEditor-VariableQuery",
		},
		"refresh":     2, // on time range change: a new limiter shows up
		"regex":       "",
		"skipUrlSync": false,
		"sort":        1,
		"type":        "query",
	}
}

// add places p at the next free position of width w and height h, starting
// a new row when the current one is full, and numbers it.
func (b *board) add(w, h int, p *panel) {
	if w < 1 || w > gridWidth || h < 1 {
		panic(fmt.Sprintf("panel %q: bad size %dx%d", p.Title, w, h))
	}
	if b.x+w > gridWidth {
		b.x, b.y, b.rowH = 0, b.y+b.rowH, 0
	}
	p.GridPos = gridPos{H: h, W: w, X: b.x, Y: b.y}
	p.ID = len(b.d.Panels) + 1
	p.Datasource = prometheusDS
	for i := range p.Targets {
		p.Targets[i].Datasource = prometheusDS
		p.Targets[i].EditorMode = "code"
		p.Targets[i].RefID = string(rune('A' + i))
	}
	b.d.Panels = append(b.d.Panels, p)
	b.x += w
	b.rowH = max(b.rowH, h)
}

// newline starts a new row even if the current one has room.
func (b *board) newline() {
	if b.x > 0 {
		b.x, b.y, b.rowH = 0, b.y+b.rowH, 0
	}
}

// done fills __requires from the panel types used.
func (b *board) done() *dashboard {
	d := b.d
	d.Requires = []require{
		{Type: "grafana", ID: "grafana", Name: "Grafana", Version: "10.4.0"},
		{Type: "datasource", ID: "prometheus", Name: "Prometheus", Version: "1.0.0"},
	}
	seen := map[string]bool{}
	for _, p := range d.Panels {
		if !seen[p.Type] {
			seen[p.Type] = true
			d.Requires = append(d.Requires, require{Type: "panel", ID: p.Type, Name: panelNames[p.Type], Version: ""})
		}
	}
	return d
}

var panelNames = map[string]string{
	"timeseries": "Time series",
	"stat":       "Stat",
	"heatmap":    "Heatmap",
	"table":      "Table",
}

// rangeTargets turns queries into range targets (what time series, stat
// and heatmap panels plot).
func rangeTargets(qs ...query) []target {
	ts := make([]target, len(qs))
	for i, q := range qs {
		ts[i] = target{Expr: q.expr, LegendFormat: q.legend, Exemplar: q.exemplar, Format: "time_series", Range: true}
	}
	return ts
}

// timeseries is a line chart of qs.
func timeseries(title, description, unit string, qs ...query) *panel {
	return &panel{
		Type: "timeseries", Title: title, Description: description,
		FieldConfig: fieldConfig{
			Defaults: map[string]any{
				"color": map[string]any{"mode": "palette-classic"},
				"custom": map[string]any{
					"axisBorderShow":    false,
					"axisCenteredZero":  false,
					"axisColorMode":     "text",
					"axisLabel":         "",
					"axisPlacement":     "auto",
					"barAlignment":      0,
					"drawStyle":         "line",
					"fillOpacity":       10,
					"gradientMode":      "none",
					"hideFrom":          map[string]any{"legend": false, "tooltip": false, "viz": false},
					"insertNulls":       false,
					"lineInterpolation": "linear",
					"lineWidth":         1,
					"pointSize":         4,
					"scaleDistribution": map[string]any{"type": "linear"},
					"showPoints":        "never",
					"spanNulls":         false,
					"stacking":          map[string]any{"group": "A", "mode": "none"},
					"thresholdsStyle":   map[string]any{"mode": "off"},
				},
				"min":        0,
				"thresholds": thresholds(),
				"unit":       unit,
			},
			Overrides: []map[string]any{},
		},
		Options: map[string]any{
			"legend":  map[string]any{"calcs": []string{"mean", "max"}, "displayMode": "table", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
		Targets: rangeTargets(qs...),
	}
}

// stat is a single number: the last value of q.
func stat(title, description, unit string, q query, steps ...any) *panel {
	return &panel{
		Type: "stat", Title: title, Description: description,
		FieldConfig: fieldConfig{
			Defaults: map[string]any{
				"color": map[string]any{"mode": "thresholds"},
				// No series means none of it happened (the counters of
				// failures are created by the first failure): show 0, not
				// "No data".
				"noValue":    "0",
				"thresholds": thresholds(steps...),
				"unit":       unit,
			},
			Overrides: []map[string]any{},
		},
		Options: map[string]any{
			"colorMode":         "value",
			"graphMode":         "area",
			"justifyMode":       "auto",
			"orientation":       "auto",
			"reduceOptions":     map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"showPercentChange": false,
			"textMode":          "auto",
			"wideLayout":        true,
		},
		Targets: rangeTargets(q),
	}
}

// thresholds returns absolute threshold steps: green below the first
// value, then each (value, color) pair in turn.
func thresholds(steps ...any) map[string]any {
	list := []map[string]any{{"color": "green", "value": nil}}
	for i := 0; i+1 < len(steps); i += 2 {
		list = append(list, map[string]any{"value": steps[i], "color": steps[i+1]})
	}
	return map[string]any{"mode": "absolute", "steps": list}
}

// colorOverride gives the series named name a fixed color.
func colorOverride(name, color string) map[string]any {
	return map[string]any{
		"matcher":    map[string]any{"id": "byName", "options": name},
		"properties": []map[string]any{{"id": "color", "value": map[string]any{"fixedColor": color, "mode": "fixed"}}},
	}
}

// Expression helpers. Every selector of a ratelimit_* metric is filtered
// by the namespace variable, and every range is $__rate_interval (or
// $__range for the instant table), so that Grafana picks a window that
// holds enough scrapes.

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
