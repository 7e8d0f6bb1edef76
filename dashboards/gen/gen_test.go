package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// dashboardsDir is where the committed files are.
const dashboardsDir = ".."

func TestMain(m *testing.M) {
	// Without the panel and data-query plugins, the SDK decodes a panel's
	// options, its fieldConfig.defaults.custom and its targets as untyped
	// maps, and checks nothing in them.
	plugins.RegisterDefaultPlugins()
	os.Exit(m.Run())
}

// TestCommittedFilesAreGenerated fails when a committed dashboard or
// layout diagram differs from what the generator writes now, or when a
// dashboard file is committed that the generator does not write.
func TestCommittedFilesAreGenerated(t *testing.T) {
	files, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		got, err := os.ReadFile(filepath.Join(dashboardsDir, name))
		if err != nil {
			t.Errorf("%v (run go generate ./dashboards and commit the result)", err)
			continue
		}
		if !bytes.Equal(got, files[name]) {
			t.Errorf("dashboards/%s is stale: run go generate ./dashboards and commit the result", name)
		}
	}
	for _, pattern := range []string{"*.json", "*.layout.svg"} {
		committed, err := filepath.Glob(filepath.Join(dashboardsDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range committed {
			if files[filepath.Base(f)] == nil {
				t.Errorf("dashboards/%s is not written by the generator: delete it, or generate it", filepath.Base(f))
			}
		}
	}
}

// committedDashboards returns every dashboard JSON in dashboards/, by name.
func committedDashboards(t *testing.T) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 2 {
		t.Fatalf("dashboards: %v, want the overview and the Redis dashboard", names)
	}
	out := map[string][]byte{}
	for _, f := range names {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = raw
	}
	return out
}

// model is raw without what Grafana's export adds beside the dashboard
// model: the share keys, which must all be there, and the null id (the SDK
// writes no id at all; its strict parse takes a null one, which leaves
// the dashboard as it was).
func model(raw []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for _, k := range shareKeys {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("no %s: the import dialog would not ask for the data source", k)
		}
		delete(m, k)
	}
	if string(m["id"]) != "null" {
		return nil, fmt.Errorf("id is %s, want null (Grafana assigns it)", m["id"])
	}
	delete(m, "id")
	return json.Marshal(m)
}

// strictParse is the SDK's strict parse of a dashboard model: unexpected
// fields, missing required fields and wrong types, in every panel's options,
// custom field config and target, are errors.
func strictParse(raw []byte) error {
	var d dashboard.Dashboard
	err := d.UnmarshalJSONStrict(raw)
	// The SDK (v0.0.22) returns its error list as an error even when the
	// list is empty: an empty list is a clean parse.
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		return nil
	}
	return err
}

// validator is what the SDK's types with constraints implement.
type validator interface{ Validate() error }

// validate decodes the model with the SDK's plugins (into typed options,
// custom field configs and Prometheus queries) and runs the SDK's Validate
// on the dashboard and on each panel's options and custom field config,
// which Dashboard.Validate leaves out. It returns the decoded dashboard.
//
// It decodes with the SDK's ordinary decoder: in v0.0.22 the strict one
// reports errors right but, on success, leaves panels, options and targets
// out of the result (a nested strict parse returns an empty error list as
// an error, and the parent then skips the assignment).
func validate(raw []byte) (dashboard.Dashboard, error) {
	var d dashboard.Dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, err
	}
	var errs []error
	if err := d.Validate(); err != nil {
		errs = append(errs, err)
	}
	for i, pr := range d.Panels {
		p := pr.Panel
		if p == nil {
			errs = append(errs, fmt.Errorf("panels[%d]: a row or nothing, want a panel", i))
			continue
		}
		parts := map[string]any{"options": p.Options}
		if p.FieldConfig != nil {
			parts["fieldConfig.defaults.custom"] = p.FieldConfig.Defaults.Custom
		}
		for what, part := range parts {
			v, typed := part.(validator)
			if part != nil && !typed {
				errs = append(errs, fmt.Errorf("panels[%d] (%s): %s is %T: the SDK does not know the panel type", i, p.Type, what, part))
				continue
			}
			if typed {
				if err := v.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("panels[%d].%s: %w", i, what, err))
				}
			}
		}
		for j, tg := range p.Targets {
			if _, ok := tg.(*prometheus.Dataquery); !ok {
				errs = append(errs, fmt.Errorf("panels[%d].targets[%d] is %T, want a Prometheus query", i, j, tg))
			}
		}
	}
	return d, errors.Join(errs...)
}

// TestStrictParse parses every committed dashboard with the SDK's strict
// parse and runs its validation, and checks that the SDK's model holds the
// whole file: encoding the decoded dashboard gives the file back.
func TestStrictParse(t *testing.T) {
	for name, raw := range committedDashboards(t) {
		t.Run(name, func(t *testing.T) {
			m, err := model(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := strictParse(m); err != nil {
				t.Errorf("strict parse:\n%v", err)
			}
			d, err := validate(m)
			if err != nil {
				t.Errorf("validate:\n%v", err)
			}
			if len(d.Panels) == 0 {
				t.Fatal("no panels decoded")
			}
			again, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			if err := json.Unmarshal(m, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(again, &got); err != nil {
				t.Fatal(err)
			}
			if d := diff("", want, got); len(d) > 0 {
				t.Errorf("the SDK's model of the file differs from the file (file -> SDK):\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestStrictParseCatches shows that the checks of TestStrictParse fail on
// the kind of fault the hand-written JSON had (the first three) and on
// others: each edit of the overview dashboard must be reported at its
// path.
func TestStrictParseCatches(t *testing.T) {
	raw := committedDashboards(t)["ratelimit-overview.json"]
	if raw == nil {
		t.Fatal("no ratelimit-overview.json")
	}
	m, err := model(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Panel 0 is a stat, 8 the table, 4 a time series.
	for _, c := range []struct {
		name   string
		edit   func(d map[string]any)
		strict bool // the strict parse catches it; otherwise Validate does
		want   string
	}{
		{"stat without percentChangeColorMode", func(d map[string]any) {
			delete(panel(d, 0)["options"].(map[string]any), "percentChangeColorMode")
		}, true, "panels[0].options.percentChangeColorMode: required field is missing"},
		{"table without frameIndex", func(d map[string]any) {
			delete(panel(d, 8)["options"].(map[string]any), "frameIndex")
		}, true, "panels[8].options.frameIndex: required field is missing"},
		{"datasource variable with queryValue", func(d map[string]any) {
			variable(d, 0)["queryValue"] = ""
		}, true, "templating.list[0].VariableModel: unexpected field 'queryValue'"},
		{"unknown target field", func(d map[string]any) {
			panel(d, 4)["targets"].([]any)[0].(map[string]any)["exemplars"] = true
		}, true, "panels[4].targets[0]"},
		{"misspelt custom field config", func(d map[string]any) {
			custom := panel(d, 4)["fieldConfig"].(map[string]any)["defaults"].(map[string]any)["custom"].(map[string]any)
			custom["fillOpacty"] = custom["fillOpacity"]
		}, true, "panels[4].fieldConfig.defaults.custom"},
		{"wrong type", func(d map[string]any) {
			panel(d, 0)["options"].(map[string]any)["wideLayout"] = "yes"
		}, true, "panels[0].options.wideLayout"},
		{"panel wider than the grid", func(d map[string]any) {
			panel(d, 4)["gridPos"].(map[string]any)["w"] = 25
		}, false, "panels[4].Panel.gridPos.w: must be <= 24"},
		{"fiscal year starting in month 12", func(d map[string]any) {
			d["fiscalYearStartMonth"] = 12
		}, false, "fiscalYearStartMonth: must be < 12"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d map[string]any
			if err := json.Unmarshal(m, &d); err != nil {
				t.Fatal(err)
			}
			c.edit(d)
			edited, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if c.strict {
				err = strictParse(edited)
			} else {
				_, err = validate(edited)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// diff lists where two decoded JSON values differ, by path.
func diff(path string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		var out []string
		for _, k := range slices.Sorted(maps.Keys(am)) {
			if _, ok := bm[k]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: dropped", path, k))
				continue
			}
			out = append(out, diff(path+"."+k, am[k], bm[k])...)
		}
		for _, k := range slices.Sorted(maps.Keys(bm)) {
			if _, ok := am[k]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: added", path, k))
			}
		}
		return out
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok && len(al) == len(bl) {
		var out []string
		for i := range al {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i])...)
		}
		return out
	}
	if !reflect.DeepEqual(a, b) {
		return []string{fmt.Sprintf("%s: %v -> %v", path, a, b)}
	}
	return nil
}

func panel(d map[string]any, i int) map[string]any {
	return d["panels"].([]any)[i].(map[string]any)
}

func variable(d map[string]any, i int) map[string]any {
	return d["templating"].(map[string]any)["list"].([]any)[i].(map[string]any)
}

// TestModelRefusesShareKeysMissing: without __inputs (or the other share
// keys) Grafana's import dialog would not ask for the data source.
func TestModelRefusesShareKeysMissing(t *testing.T) {
	raw := committedDashboards(t)["ratelimit-redis.json"]
	for _, k := range append(slices.Clone(shareKeys), "id") {
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		delete(d, k)
		edited, _ := json.Marshal(d)
		if _, err := model(edited); err == nil {
			t.Errorf("without %s: no error", k)
		}
	}
}

func TestFit(t *testing.T) {
	for _, c := range []struct {
		in    string
		width int
		want  string
	}{
		{"short", 100, "short"},
		{"abcdefghij", 35, "abcd…"},
		{"ééééé", 35, "ééééé"},
	} {
		if got := fit(c.in, c.width, 7); got != c.want {
			t.Errorf("fit(%q, %d) = %q, want %q", c.in, c.width, got, c.want)
		}
	}
}

// TestLayoutDrawsEveryPanel checks that each diagram has one box per panel
// of the JSON it is drawn from, at the panel's place.
func TestLayoutDrawsEveryPanel(t *testing.T) {
	for file, js := range committedDashboards(t) {
		svg, err := layoutSVG(file, js)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				GridPos gridPos `json:"gridPos"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(js, &d); err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(svg), `rx="4"`); got != len(d.Panels) {
			t.Errorf("%s: %d boxes for %d panels", file, got, len(d.Panels))
		}
		for _, p := range d.Panels {
			box := fmt.Sprintf(`<rect x="%d" y="%d" width="%d" height="%d" rx="4"`,
				svgMargin+p.GridPos.X*svgColumn+2, svgCaption+svgMargin+p.GridPos.Y*svgRow+2, p.GridPos.W*svgColumn-4, p.GridPos.H*svgRow-4)
			if !strings.Contains(string(svg), box) {
				t.Errorf("%s: no box %s", file, box)
			}
		}
		if !strings.Contains(string(svg), "not a screenshot") {
			t.Errorf("%s: the diagram does not say it is not a screenshot", file)
		}
	}
}

// TestWrite: the generator writes every file into the dashboards directory,
// and refuses a directory without alerts.yml (go run from elsewhere).
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := write(dir); err == nil {
		t.Error("wrote into a directory without alerts.yml")
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := write(dir); err != nil {
		t.Fatal(err)
	}
	files, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: not written as generated (%v)", name, err)
		}
	}
}
