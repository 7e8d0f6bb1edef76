package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

type report struct {
	cfg     config
	env     *environ
	cases   []benchCase
	sums    []summary
	samples map[cell][]sample
}

// ratio is the median over rounds of f(num)/f(den), each pair taken in the
// same round, where the two cells ran seconds apart: a slow drift of the
// machine (other processes) cancels out of each ratio.
func (r *report) ratio(num, den string, keys, conc int, f func(sample) float64) (float64, bool) {
	a, b := r.samples[cell{num, keys, conc}], r.samples[cell{den, keys, conc}]
	var rs []float64
	for i := range min(len(a), len(b)) {
		if a[i].Round == b[i].Round && f(b[i]) > 0 && a[i].Decisions > 0 {
			rs = append(rs, f(a[i])/f(b[i]))
		}
	}
	if len(rs) == 0 {
		return 0, false
	}
	sort.Float64s(rs)
	if len(rs)%2 == 1 {
		return rs[len(rs)/2], true
	}
	return (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2, true
}

func perSec(s sample) float64 { return s.PerSec }
func p50(s sample) float64    { return s.P50 }
func p99(s sample) float64    { return s.P99 }

func (r *report) get(name string, keys, conc int) (summary, bool) {
	for _, s := range r.sums {
		if s.Case == name && s.Keys == keys && s.Conc == conc {
			return s, s.Decisions > 0
		}
	}
	return summary{}, false
}

func (r *report) label(name string) string {
	for _, c := range r.cases {
		if c.Name == name {
			return c.Label
		}
	}
	return name
}

func keysLabel(n int) string {
	if n == 1 {
		return "one hot key"
	}
	return fmt.Sprintf("%s keys", thousands(float64(n)))
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtUS(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1f ms", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f ms", v/1000)
	default:
		return fmt.Sprintf("%.0f µs", v)
	}
}

func (r *report) command() string {
	args := strings.Join(r.cfg.args, " ")
	if args == "" {
		return "cd bench && go run ."
	}
	return "cd bench && go run . " + args
}

// target is one of issue #7's targets, as measured.
type target struct {
	what, measured string
	met, known     bool
}

func (r *report) targets() []target {
	var out []target
	const manyKeys = 10000
	// Each ratio: the median of per-round ratios; the figures beside it are
	// the medians of each case.
	cmp := func(what, num, den string, keys, conc int, f func(sample) float64, unit func(float64) string, ok func(float64) bool) {
		a, ok1 := r.get(num, keys, conc)
		b, ok2 := r.get(den, keys, conc)
		ratio, ok3 := r.ratio(num, den, keys, conc, f)
		if !ok1 || !ok2 || !ok3 {
			return
		}
		out = append(out, target{
			what:     what,
			measured: fmt.Sprintf("%.2f× (medians %s vs %s)", ratio, unit(f(a.asSample())), unit(f(b.asSample()))),
			met:      ok(ratio), known: true,
		})
	}
	rateUnit := func(v float64) string { return thousands(v) + "/s" }
	cmp("Concurrency 64, 10,000 keys: ≥ 1.5× redis_rate's decisions/s", "ratelimit", "redis_rate", manyKeys, 64, perSec, rateUnit,
		func(x float64) bool { return x >= 1.5 })
	cmp("Concurrency 64, 10,000 keys: p99 no worse than redis_rate's", "ratelimit", "redis_rate", manyKeys, 64, p99, fmtUS,
		func(x float64) bool { return x <= 1 })
	for _, nk := range r.cfg.keyspaces {
		cmp(fmt.Sprintf("Concurrency 1, %s: p50 ≤ 1.15× raw EVALSHA p50", keysLabel(nk)), "ratelimit", "raw-evalsha", nk, 1, p50, fmtUS,
			func(x float64) bool { return x <= 1.15 })
	}
	for _, nk := range r.cfg.keyspaces {
		cmp(fmt.Sprintf("(The intent: the lone caller is not taxed.) Concurrency 1, %s: p50 ≤ 1.15× raw EVALSHA of the same script (token_bucket.lua)", keysLabel(nk)),
			"ratelimit", "raw-evalsha-tokenbucket", nk, 1, p50, fmtUS, func(x float64) bool { return x <= 1.15 })
		cmp(fmt.Sprintf("(The default's condition.) Concurrency 1, %s: p50 with pipelining ≤ 1.15× p50 without", keysLabel(nk)),
			"ratelimit", "ratelimit-nopipe", nk, 1, p50, fmtUS, func(x float64) bool { return x <= 1.15 })
	}
	for _, conc := range r.cfg.concs {
		cmp(fmt.Sprintf("Telemetry on, concurrency %d, 10,000 keys: ≥ 0.90× the decisions/s without", conc),
			"ratelimit-telemetry", "ratelimit", manyKeys, conc, perSec, rateUnit, func(x float64) bool { return x >= 0.90 })
	}
	for _, conc := range []int{1, 64} {
		if ours, ok := r.get("ratelimit", manyKeys, conc); ok {
			out = append(out, target{
				what:     fmt.Sprintf("Client allocations per decision, concurrency %d, 10,000 keys (stated; %s)", conc, allocsCheck(conc)),
				measured: fmt.Sprintf("%.1f", ours.Allocs),
			})
		}
	}
	return out
}

// asSample gives a summary's medians the shape of a sample.
func (s summary) asSample() sample {
	return sample{PerSec: s.PerSec, P50: s.P50, P99: s.P99, P999: s.P999, Decisions: s.Decisions}
}

func (r *report) targetLines() []string {
	var lines []string
	for _, t := range r.targets() {
		mark := "stated"
		if t.known {
			mark = "MISSED"
			if t.met {
				mark = "met"
			}
		}
		lines = append(lines, fmt.Sprintf("  %-6s %s: %s", mark, t.what, t.measured))
	}
	return lines
}

func (r *report) markdown() string {
	var b strings.Builder
	e := r.env
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks\n\n")
	w("<!-- Generated by bench/ (%s); do not edit by hand: run the command below again. -->\n\n", r.command())
	if r.cfg.smoke {
		w("**Smoke run: every cell ran for a moment only. No figure here means anything.**\n\n")
	}
	w("Decisions per second, latency, client allocations and Redis CPU per decision of this library beside the\n")
	w("Go rate limiters people use on Redis, all on one `redis-server` on the same machine, through go-redis.\n")
	w("Every ratio below is computed from this one run: it is the median, over the rounds, of the ratio of two cells\n")
	w("measured seconds apart in the same round, so that a slow drift of the machine cancels out of it.\n\n")

	w("## Reproduce\n\n```sh\n%s\n```\n\n", r.command())
	w("`bench/` is a module of its own (the peers never enter the library's `go.mod`). It starts a `redis-server`\n")
	w("on a free loopback port (or takes `-redis host:port`), and writes `BENCHMARKS.md` and `benchmarks.svg` to `-out`\n")
	w("(default: the repository root); `-json file` also keeps every sample. `-smoke` runs every cell for a moment\n")
	w("(CI does, so that the program cannot rot); `-cases`, `-conc`, `-keys`, `-rounds` and `-duration` narrow a run.\n\n")

	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| CPUs | %d × %s |\n", e.CPUs, e.CPUModel)
	w("| Kernel | Linux %s |\n", e.Kernel)
	w("| Go | %s |\n", e.GoVersion)
	w("| Redis | redis-server %s, on the same machine, loopback TCP, persistence off |\n", e.RedisVersion)
	var mods []string
	for m, v := range e.Modules {
		mods = append(mods, fmt.Sprintf("%s %s", m, v))
	}
	sort.Strings(mods)
	w("| Modules | %s |\n", strings.Join(mods, "<br>"))
	if e.Commit != "" {
		w("| Commit | %s |\n", e.Commit)
	}
	w("| Load average (1, 5, 15 min) | before: %s; after: %s |\n", e.LoadBefore, e.LoadAfter)
	w("| CPU used by other processes during the run | %.2f of %d cores on average (the benchmark and its Redis excluded) |\n", e.OtherCPU, e.CPUs)
	w("| Run | %s, %s; %d round(s) of %v per cell (after %v of warm-up) |\n\n",
		e.Started.Format("2006-01-02 15:04 MST"), e.Took.Round(1e9), r.cfg.rounds, r.cfg.dur, r.cfg.warm)

	w("## Targets (issue #7)\n\n| Target | Measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		mark := "stated"
		if t.known {
			mark = "❌ missed"
			if t.met {
				mark = "✅ met"
			}
		}
		w("| %s | %s | %s |\n", t.what, t.measured, mark)
	}
	w("\n")

	r.redisCost(w)
	w("## Decisions per second\n\n![decisions per second by concurrency](benchmarks.svg)\n\n")
	r.choices(w)

	for _, nk := range r.cfg.keyspaces {
		w("## %s\n\n", strings.ToUpper(keysLabel(nk)[:1])+keysLabel(nk)[1:])
		w("| Conc. | Case | Decisions/s | p50 | p99 | p99.9 | Allocs/decision | Redis CPU/decision | Redis commands per decision × time per call | Errors |\n")
		w("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|\n")
		for _, conc := range r.cfg.concs {
			for _, c := range r.cases {
				s, _ := r.get(c.Name, nk, conc)
				w("| %d | %s | %s | %s | %s | %s | %.1f | %.1f µs | %s | %s |\n",
					conc, c.Label, thousands(s.PerSec), fmtUS(s.P50), fmtUS(s.P99), fmtUS(s.P999),
					s.Allocs, s.RedisCPU, cmdsString(s.Cmds), errCell(s))
			}
		}
		w("\n")
	}

	w("## The cases\n\n| Case | What it runs |\n|---|---|\n")
	for _, c := range r.cases {
		w("| %s (`%s`) | %s |\n", c.Label, c.Name, c.Note)
	}
	w("\nTelemetry subscribers in the `+ telemetry` cases: ")
	var subs []string
	for _, s := range telemetrySubscribers {
		subs = append(subs, s.name)
	}
	w("%s. (These are all the subscribers in this repository at the time of the run; the list is\n", strings.Join(subs, "; "))
	w("`telemetrySubscribers` in `bench/cases.go`.)\n\n")

	w("## How it is measured\n\n")
	w("- Every library gets its own go-redis client per cell (`PoolSize` = max(concurrency, 4), so no case waits on the\n")
	w("  pool; `ContextTimeoutEnabled`), and the same limit, %s/s per key, so nothing is ever denied and every call\n", thousands(rate))
	w("  does the library's full write path. This library runs with its defaults (100 ms backend timeout).\n")
	w("- A cell is N goroutines calling in a loop for the duration, each on its own sequence of keys. Latency is\n")
	w("  each call's wall time (log-linear histogram, within 1.6%%). Decisions/s counts calls that returned without\n")
	w("  error, over the cell's wall time.\n")
	w("- Client allocations: `runtime.MemStats.Mallocs` delta over the cell / decisions (the whole process: the\n")
	w("  library's own goroutines included, the benchmark loop allocates nothing).\n")
	w("- Redis CPU: `INFO cpu` `used_cpu_sys + used_cpu_user` delta / decisions: everything Redis spent, network\n")
	w("  included. Commands: `INFO commandstats` after `CONFIG RESETSTAT`, as calls per decision × `usec_per_call`\n")
	w("  (a script's time includes the commands it calls, which are listed again on their own; a pipelined EVALSHA\n")
	w("  still counts as one call).\n")
	w("- Cases alternate: every round runs each (keys, concurrency) for every case in turn, starting from a\n")
	w("  different case each round; each figure is the median over the rounds. Client and Redis share the machine's\n")
	w("  %d CPUs.\n", e.CPUs)
	return b.String()
}

// redisCost shows what each decision costs Redis at concurrency 64 on
// 10,000 keys: Redis runs commands on one thread, so once it is the
// bottleneck decisions/s is about 1 / its CPU per decision.
func (r *report) redisCost(w func(string, ...any)) {
	const keys, conc = 10000, 64
	names := []string{"ratelimit", "ratelimit-nopipe", "redis_rate", "ulule", "raw-evalsha-tokenbucket-autopipeline", "raw-evalsha"}
	var rows []summary
	for _, n := range names {
		if s, ok := r.get(n, keys, conc); ok {
			rows = append(rows, s)
		}
	}
	if len(rows) < 2 {
		return
	}
	w("### What a decision costs Redis (concurrency 64, 10,000 keys)\n\n")
	w("Redis runs commands on one thread: once it is the bottleneck, decisions/s is about 1 / its CPU per decision.\n")
	w("Pipelining removes the per-call network work from that CPU, not the script's own time.\n\n")
	w("| Case | Decisions/s | Redis CPU/decision | Script time per call (EVALSHA, commandstats) |\n|---|---:|---:|---:|\n")
	for _, s := range rows {
		script := "–"
		if u, ok := s.Cmds["evalsha"]; ok {
			script = fmt.Sprintf("%.1f µs", u.USPerCall)
		}
		w("| %s | %s | %.1f µs | %s |\n", r.label(s.Case), thousands(s.PerSec), s.RedisCPU, script)
	}
	w("\n")
}

// choices puts the cases behind the library's choices side by side:
// pipelining on or off, and its own dispatcher against go-redis's
// AutoPipeline.
func (r *report) choices(w func(string, ...any)) {
	const manyKeys = 10000
	names := []string{"ratelimit", "ratelimit-nopipe", "raw-evalsha-tokenbucket-autopipeline", "raw-evalsha-tokenbucket"}
	var have []string
	for _, n := range names {
		if _, ok := r.get(n, manyKeys, r.cfg.concs[0]); ok {
			have = append(have, n)
		}
	}
	if len(have) < 2 {
		return
	}
	w("## Pipelining: on or off, own dispatcher or go-redis AutoPipeline (10,000 keys)\n\n")
	w("Decisions/s and p50 by concurrency. The AutoPipeline line sends the same script by hand (no key hashing,\n")
	w("no Result, no event), so it does less work than the library does.\n\n| Conc. |")
	for _, n := range have {
		w(" %s |", r.label(n))
	}
	w("\n|---:|%s\n", strings.Repeat("---:|", len(have)))
	for _, conc := range r.cfg.concs {
		w("| %d |", conc)
		for _, n := range have {
			s, _ := r.get(n, manyKeys, conc)
			w(" %s/s, p50 %s |", thousands(s.PerSec), fmtUS(s.P50))
		}
		w("\n")
	}
	w("\n")
}

func errCell(s summary) string {
	if s.Errors == 0 {
		return "0"
	}
	msg := s.FirstErr
	if len(msg) > 60 {
		msg = msg[:60] + "…"
	}
	msg = strings.ReplaceAll(msg, "|", "/")
	return fmt.Sprintf("%s (%.1f%%; %s)", thousands(float64(s.Errors)), 100*float64(s.Errors)/float64(s.Errors+s.Decisions), msg)
}

// svg draws decisions/s by concurrency, one panel per key space, one line
// per case.
func (r *report) svg() string {
	const (
		panelW, panelH = 440.0, 300.0
		left, top      = 70.0, 50.0
		gap            = 40.0
		legendRow      = 18.0
	)
	nPanels := len(r.cfg.keyspaces)
	width := left + float64(nPanels)*(panelW+gap)
	legendRows := (len(r.cases) + 1) / 2
	height := top + panelH + 50 + float64(legendRows)*legendRow + 10
	palette := []string{"#1f77b4", "#17becf", "#2ca02c", "#98df8a", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22", "#e377c2"}
	style := func(i int) (color, dash string) {
		color = palette[i%len(palette)]
		name := r.cases[i].Name
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
	for p, nk := range r.cfg.keyspaces {
		x0 := left + float64(p)*(panelW+gap)
		maxY := 0.0
		for _, c := range r.cases {
			for _, conc := range r.cfg.concs {
				s, _ := r.get(c.Name, nk, conc)
				maxY = math.Max(maxY, s.PerSec)
			}
		}
		step := niceStep(maxY / 5)
		maxY = math.Ceil(maxY/step) * step
		if maxY == 0 {
			maxY, step = 1, 1
		}
		xAt := func(i int) float64 {
			if len(r.cfg.concs) == 1 {
				return x0 + panelW/2
			}
			return x0 + float64(i)*panelW/float64(len(r.cfg.concs)-1)
		}
		yAt := func(v float64) float64 { return top + panelH - v/maxY*panelH }
		w(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", x0+panelW/2, top-15, keysLabel(nk))
		for v := 0.0; v <= maxY+step/2; v += step {
			y := yAt(v)
			w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+panelW, y)
			w(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y+4, shortNum(v))
		}
		for i, conc := range r.cfg.concs {
			x := xAt(i)
			w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x, top+panelH, x, top+panelH+5)
			w(`<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, top+panelH+18, conc)
		}
		w(`<text x="%.1f" y="%.1f" text-anchor="middle">concurrent callers</text>`+"\n", x0+panelW/2, top+panelH+34)
		if p == 0 {
			w(`<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">decisions per second</text>`+"\n", top+panelH/2)
		}
		w(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", x0, top, panelW, panelH)
		for ci, c := range r.cases {
			color, dash := style(ci)
			var pts []string
			for i, conc := range r.cfg.concs {
				s, _ := r.get(c.Name, nk, conc)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(s.PerSec)))
			}
			w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", strings.Join(pts, " "), color, dash)
			for _, pt := range pts {
				xy := strings.Split(pt, ",")
				w(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], color)
			}
		}
	}
	ly := top + panelH + 55
	for ci, c := range r.cases {
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

// allocsCheck names what holds the allocation figure of a concurrency: a
// lone call is asserted by a test, a concurrent one only reported.
func allocsCheck(conc int) string {
	if conc == 1 {
		return "asserted by TestAllocsPerAllow"
	}
	return "reported by BenchmarkAllowConcurrent, not asserted"
}
