package main

import (
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"unicode/utf8"
)

// The layout diagrams are drawn from the dashboards' JSON: one box per
// panel at its gridPos, with its title and type. They show where the panels
// are, not what Grafana renders in them (no Grafana runs here to take a
// screenshot), and say so in their caption.

const (
	svgColumn  = 40 // pixels per grid column
	svgRow     = 30 // pixels per grid row (Grafana's is 30 px)
	svgMargin  = 10
	svgCaption = 44 // pixels above the grid for the caption
)

// gridWidth is the width of Grafana's grid, in columns.
const gridWidth = 24

// gridPos is a panel's place on the grid, as the JSON has it.
type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// panelFill tells the panel types apart.
var panelFill = map[string]string{
	"stat":       "#e8f1fb",
	"timeseries": "#eef7ee",
	"heatmap":    "#fdf0e2",
	"table":      "#f3eefa",
}

// layoutSVG draws the grid of the dashboard in js (the JSON of a file).
func layoutSVG(file string, js []byte) ([]byte, error) {
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string  `json:"title"`
			Type    string  `json:"type"`
			GridPos gridPos `json:"gridPos"`
			Targets []struct {
				Exemplar bool `json:"exemplar"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(js, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	rows := 0
	for _, p := range d.Panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	width := 2*svgMargin + gridWidth*svgColumn
	height := svgCaption + 2*svgMargin + rows*svgRow
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<title>Layout diagram of the Grafana dashboard %s (uid %s), drawn from %s; not a screenshot</title>`+"\n", esc(d.Title), esc(d.UID), esc(file))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="15" font-weight="bold" fill="#222">%s</text>`+"\n", svgMargin, svgMargin+16, esc(d.Title))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#555">Layout diagram generated from %s (24-column grid): panel positions, titles and types only, not a screenshot.</text>`+"\n", svgMargin, svgMargin+33, esc(file))
	for _, p := range d.Panels {
		x := svgMargin + p.GridPos.X*svgColumn
		y := svgCaption + svgMargin + p.GridPos.Y*svgRow
		w, h := p.GridPos.W*svgColumn, p.GridPos.H*svgRow
		fill := panelFill[p.Type]
		if fill == "" {
			fill = "#eeeeee"
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="4" fill="%s" stroke="#8a8a8a"/>`+"\n", x+2, y+2, w-4, h-4, fill)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-weight="bold" fill="#222">%s</text>`+"\n", x+8, y+18, esc(fit(p.Title, w-16, 7)))
		kind := p.Type
		for _, tg := range p.Targets {
			if tg.Exemplar {
				kind += ", exemplars"
				break
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#666">%s</text>`+"\n", x+8, y+33, esc(fit(kind, w-16, 6)))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String()), nil
}

func esc(s string) string { return html.EscapeString(s) }

// fit shortens s with an ellipsis to about width pixels at charWidth pixels
// a character.
func fit(s string, width, charWidth int) string {
	n := width / charWidth
	if utf8.RuneCountInString(s) <= n || n < 2 {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
