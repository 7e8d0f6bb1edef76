package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// target is one of issue 13's targets, measured in each client setup.
type target struct {
	what string
	by   map[string]measure // by setup
}

// measure is a target's figure in one setup.
type measure struct {
	text string
	met  bool
}

// The issue's bounds.
const (
	wantOverRedisRate64 = 2.0  // decisions/s at 64 callers, × redis_rate's
	wantOverUlule64     = 1.3  // × ulule's
	wantOverRedisRate16 = 1.2  // at 16 callers, × redis_rate's
	wantP50Lone         = 1.1  // p50 of a lone caller, at most × redis_rate's
	wantRedisCPU        = 5.0  // µs of Redis CPU per decision at 64 callers
	wantTelemetry       = 0.90 // decisions/s with telemetry, at least × without
	wantFewerCalls      = 5.0  // script calls without the deny cache ÷ with
)

// algCases are the library's cases per algorithm, for the Redis CPU target.
var algCases = []struct{ alg, name string }{
	{"token_bucket", "ratelimit"},
	{"sliding_window", "ratelimit-sliding_window"},
	{"sliding_log", "ratelimit-sliding_log"},
	{"fixed_window", "ratelimit-fixed_window"},
}

const denyCacheCase = "abuse-denycache"

func (r *report) targets() []target {
	var out []target
	add := func(what string, f func(setup string) (measure, bool)) {
		t := target{what: what, by: map[string]measure{}}
		for _, s := range r.cfg.setups {
			if m, ok := f(s); ok {
				t.by[s] = m
			}
		}
		if len(t.by) > 0 {
			out = append(out, t)
		}
	}
	rateUnit := func(v float64) string { return thousands(v) + "/s" }
	// ratioOf is the median of paired ratios, with the two cases' medians
	// beside it.
	ratioOf := func(num, den string, keys, conc int, f func(sample) float64, unit func(float64) string, ok func(float64) bool) func(string) (measure, bool) {
		return func(setup string) (measure, bool) {
			a, ok1 := r.get(num, setup, keys, conc)
			b, ok2 := r.get(den, setup, keys, conc)
			q, ok3 := r.ratioQuartiles(num, den, setup, keys, conc, f)
			if !ok1 || !ok2 || !ok3 {
				return measure{}, false
			}
			return measure{
				text: fmt.Sprintf("%s× (middle half of rounds %.2f–%.2f; medians %s vs %s)", verdictDigits(q[1], ok), q[0], q[2], unit(f(a.asSample())), unit(f(b.asSample()))),
				met:  ok(q[1]),
			}, true
		}
	}
	add(fmt.Sprintf("Concurrency 64, 10,000 keys: ≥ %g× redis_rate's decisions/s", wantOverRedisRate64),
		ratioOf("ratelimit", "redis_rate", manyKeys, 64, perSec, rateUnit, func(x float64) bool { return x >= wantOverRedisRate64 }))
	add(fmt.Sprintf("Concurrency 64, 10,000 keys: ≥ %g× ulule's decisions/s", wantOverUlule64),
		ratioOf("ratelimit", "ulule", manyKeys, 64, perSec, rateUnit, func(x float64) bool { return x >= wantOverUlule64 }))
	add(fmt.Sprintf("Concurrency 16, 10,000 keys: ≥ %g× redis_rate's decisions/s", wantOverRedisRate16),
		ratioOf("ratelimit", "redis_rate", manyKeys, 16, perSec, rateUnit, func(x float64) bool { return x >= wantOverRedisRate16 }))
	add(fmt.Sprintf("Concurrency 1, 10,000 keys: p50 ≤ %g× redis_rate's p50", wantP50Lone),
		ratioOf("ratelimit", "redis_rate", manyKeys, 1, p50, fmtUS, func(x float64) bool { return x <= wantP50Lone }))
	for _, a := range algCases {
		add(fmt.Sprintf("Redis CPU per decision, concurrency 64, 10,000 keys, %s: ≤ %g µs", a.alg, wantRedisCPU),
			func(setup string) (measure, bool) {
				s, ok := r.get(a.name, setup, manyKeys, 64)
				if !ok {
					return measure{}, false
				}
				return measure{
					text: fmt.Sprintf("%.1f µs (%s/s, %s decisions per script call)", s.RedisCPU, thousands(s.PerSec), perScriptCall(s)),
					met:  s.RedisCPU <= wantRedisCPU,
				}, true
			})
	}
	for _, conc := range r.cfg.concs {
		add(fmt.Sprintf("Telemetry on, concurrency %d, 10,000 keys: ≥ %.2f× the decisions/s without", conc, wantTelemetry),
			ratioOf("ratelimit-telemetry", "ratelimit", manyKeys, conc, perSec, rateUnit, func(x float64) bool { return x >= wantTelemetry }))
	}
	for _, conc := range r.cfg.concs {
		add(fmt.Sprintf("Deny cache under abuse, concurrency %d: ≥ %g× fewer Redis script calls per decision than without", conc, wantFewerCalls),
			func(setup string) (measure, bool) {
				with, ok1 := r.get(denyCacheCase, setup, manyKeys, conc)
				without, ok2 := r.get("abuse", setup, manyKeys, conc)
				// Without ÷ with: how many times fewer.
				q, ok3 := r.ratioQuartiles("abuse", denyCacheCase, setup, manyKeys, conc, scriptCalls)
				if !ok1 || !ok2 || !ok3 {
					return measure{}, false
				}
				return measure{
					text: fmt.Sprintf("%.1f× (middle half of rounds %.1f–%.1f; %.4f vs %.4f calls per decision; %s answered without Redis; %s/s with vs %s/s without)",
						q[1], q[0], q[2], without.ScriptCalls, with.ScriptCalls, pct(with.CachedShare), thousands(with.PerSec), thousands(without.PerSec)),
					met: q[1] >= wantFewerCalls,
				}, true
			})
		add(fmt.Sprintf("Deny cache under abuse, concurrency %d: 0 over-admission", conc),
			func(setup string) (measure, bool) {
				s, ok := r.get(denyCacheCase, setup, manyKeys, conc)
				if !ok || s.Abuse == nil {
					return measure{}, false
				}
				a := s.Abuse
				return measure{
					text: fmt.Sprintf("%s in the worst of %d rounds (abusers admitted %s of a bound of %s, medians)",
						thousands(float64(a.Over)), s.Rounds, thousands(float64(a.Admitted)), thousands(float64(a.Bound))),
					met: a.Over == 0,
				}, true
			})
	}
	return append(out, r.shardTargets()...)
}

// asSample gives a summary's medians the shape of a sample.
func (s summary) asSample() sample {
	return sample{PerSec: s.PerSec, P50: s.P50, P99: s.P99, P999: s.P999, Decisions: s.Decisions}
}

// targetColumns are the setups that have a measure of some target, in
// order: the single-server setups, then the Redis Cluster section's.
func (r *report) targetColumns(ts []target) []string {
	var cols []string
	for _, s := range append(slices.Clone(r.cfg.setups), clusterSetup) {
		for _, t := range ts {
			if _, ok := t.by[s]; ok {
				cols = append(cols, s)
				break
			}
		}
	}
	return cols
}

func (r *report) targetTable(w func(string, ...any)) {
	ts := r.targets()
	if len(ts) == 0 {
		return
	}
	cols := r.targetColumns(ts)
	issues := "issue 13"
	switch {
	case slices.Contains(cols, clusterSetup) && len(cols) > 1:
		issues = "issues 13 and 14"
	case slices.Contains(cols, clusterSetup):
		issues = "issue 14"
	}
	w("## Targets (%s)\n\n", issues)
	w("Each ratio is the median over rounds of the ratio of two cells of one setup measured in the same round, with\n")
	w("the quartiles of those per-round ratios (how much one round strays) and each case's medians in brackets.\n")
	w("Redis CPU per decision is a median over rounds.\n\n")
	writeTargetRows(w, ts, cols)
	w("\n")
}

// writeTargetRows writes the targets as a table with a column per setup.
func writeTargetRows(w func(string, ...any), ts []target, cols []string) {
	w("| Target |")
	for _, s := range cols {
		w(" %s |", setupLabel(s))
	}
	w("\n|---|%s\n", strings.Repeat("---|", len(cols)))
	for _, t := range ts {
		w("| %s |", t.what)
		for _, s := range cols {
			m, ok := t.by[s]
			switch {
			case !ok:
				w(" – |")
			case m.met:
				w(" ✅ met: %s |", m.text)
			default:
				w(" ❌ missed: %s |", m.text)
			}
		}
		w("\n")
	}
}

func (r *report) targetLines() []string {
	var lines []string
	for _, t := range r.targets() {
		for _, s := range append(slices.Clone(r.cfg.setups), clusterSetup) {
			m, ok := t.by[s]
			if !ok {
				continue
			}
			mark := "MISSED"
			if m.met {
				mark = "met"
			}
			lines = append(lines, fmt.Sprintf("  %-6s [%s] %s: %s", mark, s, t.what, m.text))
		}
	}
	return lines
}

// headline returns the few figures the README's front page quotes, from the
// shared default client (what a user runs) with the per-case client beside
// it.
func (r *report) headline() []string {
	main, other := shared, perCase
	if !slices.Contains(r.cfg.setups, shared) {
		main, other = perCase, ""
	}
	var out []string
	if ours, ok := r.get("ratelimit", main, manyKeys, 64); ok {
		line := fmt.Sprintf("**%s decisions/s** at 64 concurrent callers on 10,000 keys", thousands(ours.PerSec))
		var peers []string
		for _, p := range []struct{ name, label string }{{"redis_rate", "go-redis/redis_rate v10"}, {"ulule", "ulule/limiter v3"}} {
			if x, ok := r.ratio("ratelimit", p.name, main, manyKeys, 64, perSec); ok {
				peer := fmt.Sprintf("%.2f× %s", x, p.label)
				if y, ok := r.ratio("ratelimit", p.name, other, manyKeys, 64, perSec); ok && other != "" {
					peer += fmt.Sprintf(" (%.2f× with a client per limiter)", y)
				}
				peers = append(peers, peer)
			}
		}
		if len(peers) > 0 {
			line += ": " + strings.Join(peers, ", ")
		}
		out = append(out, line+fmt.Sprintf(" — %s, one redis-server 7 on the same %d-CPU machine.", r.setupShort(main), r.env.CPUs))
	}
	var algs []string
	for _, a := range algCases {
		if s, ok := r.get(a.name, main, manyKeys, 64); ok {
			algs = append(algs, fmt.Sprintf("%s %.1f µs", a.alg, s.RedisCPU))
		}
	}
	if len(algs) > 0 {
		line := "**Redis CPU per decision** at 64 callers: " + strings.Join(algs, ", ")
		if s, ok := r.get("redis_rate", main, manyKeys, 64); ok {
			line += fmt.Sprintf(" (redis_rate: %.1f µs)", s.RedisCPU)
		}
		out = append(out, line+"; many decisions go to Redis in one script call.")
	}
	if s, ok := r.get("ratelimit", main, manyKeys, 1); ok {
		line := fmt.Sprintf("**A lone caller: p50 %s**", fmtUS(s.P50))
		if p, ok := r.get("redis_rate", main, manyKeys, 1); ok {
			line += fmt.Sprintf(" (redis_rate: %s)", fmtUS(p.P50))
		}
		var tel []string
		for _, conc := range r.cfg.concs {
			if x, ok := r.ratio("ratelimit-telemetry", "ratelimit", main, manyKeys, conc, perSec); ok {
				tel = append(tel, fmt.Sprintf("%.2f×", x))
			}
		}
		if len(tel) > 0 {
			line += fmt.Sprintf("; with the Prometheus, OpenTelemetry and slog subscribers all on, %s the decisions/s without them at %s callers",
				strings.Join(tel, " / "), joinInts(r.cfg.concs, " / "))
		}
		out = append(out, line+".")
	}
	for _, conc := range r.cfg.concs {
		with, ok1 := r.get(denyCacheCase, main, manyKeys, conc)
		x, ok2 := r.ratio("abuse", denyCacheCase, main, manyKeys, conc, scriptCalls)
		if !ok1 || !ok2 || with.Abuse == nil {
			continue
		}
		out = append(out, fmt.Sprintf("**Under abuse** (%d%% of calls from identities over their limit), the opt-in deny cache sends "+
			"**%.1f× fewer script calls** to Redis and answers %s of decisions in-process, with %s over-admission.",
			100-100/theAbuse.every, x, pct(with.CachedShare), thousands(float64(with.Abuse.Over))))
	}
	if n3, ok := r.shardGet(shardName(3, 3), 64); ok {
		if x, ok := r.shardRatio(shardName(3, 3), shardName(1, 3), 64); ok {
			line := fmt.Sprintf("**One hot identity on a 3-master Redis Cluster** at 64 callers: `WithShards(3)` made %s decisions/s, "+
				"%.2f× `WithShards(1)`, with the client and all three masters on the same %d CPUs", thousands(n3.PerSec), x, r.env.CPUs)
			if rounds := r.admissionRounds(admitName(3, 3), 64); len(rounds) > 0 {
				lo, _, _, over := admissionSpread(rounds)
				line += fmt.Sprintf("; under saturating load it admitted %s of burst + rate × elapsed (median of the rounds' shares; lowest round %s), above it in %d of %d rounds",
					pct(medianOf(rounds, admitShare)), pct(lo), over, len(rounds))
			}
			out = append(out, line+".")
		}
	}
	return out
}

func (r *report) setupShort(setup string) string {
	if setup == shared {
		return fmt.Sprintf("one go-redis client with default options (PoolSize %d) shared by every limiter", r.env.SharedPoolSize)
	}
	return "a go-redis client per limiter, PoolSize = callers, ContextTimeoutEnabled"
}

func joinInts(v []int, sep string) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, sep)
}

// verdictDigits formats x with two decimals, or three when two would round
// it across the target (0.899 shown as "0.90" beside "missed").
func verdictDigits(x float64, ok func(float64) bool) string {
	two := fmt.Sprintf("%.2f", x)
	if v, err := strconv.ParseFloat(two, 64); err == nil && ok(v) != ok(x) {
		return fmt.Sprintf("%.3f", x)
	}
	return two
}
