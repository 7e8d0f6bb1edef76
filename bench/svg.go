package main

import (
	"fmt"
	"math"
	"strings"
)

// svg draws decisions/s by concurrency: one panel per client setup (rows)
// and key space (columns), one line per case that runs in every cell (the
// single-cell cases are in the tables).
func (r *report) svg() string {
	const (
		panelW, panelH = 440.0, 300.0
		left, top      = 70.0, 50.0
		gap            = 40.0
		rowGap         = 90.0
		legendRow      = 18.0
	)
	var cases []benchCase
	for _, c := range r.cases {
		if c.only == nil && c.abuse == nil {
			cases = append(cases, c)
		}
	}
	cols, rows := len(r.cfg.keyspaces), len(r.cfg.setups)
	width := left + float64(cols)*(panelW+gap)
	legendRows := (len(cases) + 1) / 2
	gridH := float64(rows)*(panelH+rowGap) - rowGap
	height := top + gridH + 50 + float64(legendRows)*legendRow + 10
	palette := []string{"#1f77b4", "#17becf", "#2ca02c", "#98df8a", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22", "#e377c2", "#393b79"}
	style := func(i int) (color, dash string) {
		color = palette[i%len(palette)]
		name := cases[i].Name
		switch {
		case strings.HasPrefix(name, "raw"):
			dash = "2,3"
		case !strings.HasPrefix(name, "ratelimit"):
			dash = "7,4"
		}
		return color, dash
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="%.1f" y="14" fill="#555">%s</text>`+"\n", left, xmlEscape(fmt.Sprintf(
		"Decisions per second, median of %d round(s) of %v; %d CPUs (%s), redis-server %s; %s",
		r.cfg.rounds, r.cfg.dur, r.env.CPUs, r.env.CPUModel, r.env.RedisVersion, r.env.Started.Format("2006-01-02"))))
	// One scale for every panel, so that the setups compare by eye.
	maxY := 0.0
	for _, setup := range r.cfg.setups {
		for _, nk := range r.cfg.keyspaces {
			for _, c := range cases {
				for _, conc := range r.cfg.concs {
					s, _ := r.get(c.Name, setup, nk, conc)
					maxY = math.Max(maxY, s.PerSec)
				}
			}
		}
	}
	step := niceStep(maxY / 5)
	maxY = math.Ceil(maxY/step) * step
	if maxY == 0 {
		maxY, step = 1, 1
	}
	for row, setup := range r.cfg.setups {
		y0 := top + float64(row)*(panelH+rowGap)
		for p, nk := range r.cfg.keyspaces {
			x0 := left + float64(p)*(panelW+gap)
			xAt := func(i int) float64 {
				if len(r.cfg.concs) == 1 {
					return x0 + panelW/2
				}
				return x0 + float64(i)*panelW/float64(len(r.cfg.concs)-1)
			}
			yAt := func(v float64) float64 { return y0 + panelH - v/maxY*panelH }
			w(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n",
				x0+panelW/2, y0-15, xmlEscape(setupLabel(setup)+", "+keysLabel(nk)))
			for v := 0.0; v <= maxY+step/2; v += step {
				y := yAt(v)
				w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+panelW, y)
				w(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y+4, shortNum(v))
			}
			for i, conc := range r.cfg.concs {
				x := xAt(i)
				w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x, y0+panelH, x, y0+panelH+5)
				w(`<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, y0+panelH+18, conc)
			}
			w(`<text x="%.1f" y="%.1f" text-anchor="middle">concurrent callers</text>`+"\n", x0+panelW/2, y0+panelH+34)
			if p == 0 {
				w(`<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">decisions per second</text>`+"\n", y0+panelH/2)
			}
			w(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", x0, y0, panelW, panelH)
			for ci, c := range cases {
				color, dash := style(ci)
				var pts []string
				for i, conc := range r.cfg.concs {
					s, _ := r.get(c.Name, setup, nk, conc)
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(s.PerSec)))
				}
				w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", strings.Join(pts, " "), color, dash)
				for _, pt := range pts {
					xy := strings.Split(pt, ",")
					w(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], color)
				}
			}
		}
	}
	ly := top + gridH + 55
	for ci, c := range cases {
		color, dash := style(ci)
		x := left + float64(ci/legendRows)*(width-left)/2
		y := ly + float64(ci%legendRows)*legendRow
		w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", x, y-4, x+30, y-4, color, dash)
		w(`<text x="%.1f" y="%.1f">%s</text>`+"\n", x+36, y, xmlEscape(c.Label))
	}
	w("</svg>\n")
	return b.String()
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", v)
	}
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
