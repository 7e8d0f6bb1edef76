package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// boards are the dashboards, by the file each is written to.
var boards = map[string]func() *board{
	"ratelimit-overview.json": overview,
	"ratelimit-redis.json":    redisBackend,
}

// shareKeys are the keys Grafana's "Export for sharing externally" puts
// beside the dashboard model. They are not part of the model (the SDK has
// no field for them and its strict parse refuses them); Grafana's import
// dialog reads them to ask for the Prometheus data source.
var shareKeys = []string{"__elements", "__inputs", "__requires"}

// build runs the SDK's builder (which validates the result) and adjusts
// what the builder has no setter for.
func (b *board) build() (dashboard.Dashboard, error) {
	d, err := b.d.Build()
	if err != nil {
		return d, err
	}
	d.SchemaVersion = schemaVersion
	// The SDK puts links and annotations "inControlsMenu" by default: in the
	// dashboard controls menu instead of above the panels, in the Grafana
	// versions that know the field. Grafana's own default (no placement)
	// keeps the link to the other dashboards in view, as before.
	for i := range d.Links {
		d.Links[i].Placement = nil
	}
	for i := range d.Annotations.List {
		d.Annotations.List[i].Placement = nil
	}
	return d, nil
}

// render writes the dashboard as Grafana's export for sharing does: the
// model with a null id, and the share keys, so that the import dialog asks
// for the Prometheus data source. Keys are sorted, as in Grafana's own
// exports, so that a diff against one stays small and regenerating is
// byte-for-byte stable.
func render(d dashboard.Dashboard) ([]byte, error) {
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep numbers as the SDK wrote them (1e-9, not 1e-09)
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	m["id"] = nil // Grafana assigns it on import
	m["__inputs"] = []map[string]string{{
		"name":        dsInput,
		"label":       "Prometheus",
		"description": "The Prometheus that scrapes the ratelimit_* metrics (telemetry/prom).",
		"type":        "datasource",
		"pluginId":    "prometheus",
		"pluginName":  "Prometheus",
	}}
	m["__elements"] = map[string]any{}
	m["__requires"] = requires(d)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<" and "&" in descriptions readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// panelNames are the display names of the panel plugins the dashboards use,
// for __requires.
var panelNames = map[string]string{
	"timeseries": "Time series",
	"stat":       "Stat",
	"heatmap":    "Heatmap",
	"table":      "Table",
}

// requires lists Grafana 10.4, the Prometheus data source and the panel
// plugins d uses, in order of first use, as Grafana's export does.
func requires(d dashboard.Dashboard) []map[string]string {
	out := []map[string]string{
		{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
		{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
	}
	var seen []string
	for _, p := range d.Panels {
		if p.Panel == nil || slices.Contains(seen, p.Panel.Type) {
			continue
		}
		seen = append(seen, p.Panel.Type)
		out = append(out, map[string]string{"type": "panel", "id": p.Panel.Type, "name": panelNames[p.Panel.Type], "version": ""})
	}
	return out
}

// generate returns every generated file (dashboards and their layout
// diagrams) by name.
func generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, newBoard := range boards {
		d, err := newBoard().build()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, p := range d.Panels {
			if p.Panel != nil && panelNames[p.Panel.Type] == "" {
				return nil, fmt.Errorf("%s: panel type %q has no name for __requires", name, p.Panel.Type)
			}
		}
		js, err := render(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		svg, err := layoutSVG(name, js)
		if err != nil {
			return nil, err
		}
		out[name] = js
		out[strings.TrimSuffix(name, ".json")+".layout.svg"] = svg
	}
	return out, nil
}
