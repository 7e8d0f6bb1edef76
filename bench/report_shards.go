package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// The bounds of issue 14.
const (
	wantShardSpeedup = 2.0  // WithShards(3) on 3 masters, × WithShards(1), at 64 callers
	wantAdmitShare   = 0.90 // admitted, at least × burst + rate × elapsed
)

const shardsTitle = "Hot keys on Redis Cluster: sharded buckets"

func shardName(shards, masters int) string { return fmt.Sprintf("shards-n%d-m%d", shards, masters) }
func admitName(shards, masters int) string {
	return fmt.Sprintf("shards-admit-n%d-m%d", shards, masters)
}
func nopipeName(shards, masters int) string {
	return fmt.Sprintf("shards-nopipe-n%d-m%d", shards, masters)
}

func (r *report) shardGet(name string, conc int) (summary, bool) {
	return r.get(name, clusterSetup, 1, conc)
}

// shardRatio is the median of same-round ratios of decisions/s of two cells
// of the section.
func (r *report) shardRatio(num, den string, conc int) (float64, bool) {
	return r.ratio(num, den, clusterSetup, 1, conc, perSec)
}

// admissionRounds is every round of an admission cell (that has a check).
func (r *report) admissionRounds(name string, conc int) []sample {
	var out []sample
	for _, s := range r.samples[cell{name, clusterSetup, 1, conc}] {
		if s.Admission != nil && s.Admission.Bound > 0 {
			out = append(out, s)
		}
	}
	return out
}

// admitShare is admitted / bound of one round.
func admitShare(s sample) float64 { return float64(s.Admission.Admitted) / float64(s.Admission.Bound) }

// admissionSpread is the lowest and highest admitted / bound of the rounds,
// the round of the lowest, and the rounds that went over the bound.
func admissionSpread(rounds []sample) (lo, hi float64, low sample, over int) {
	for i, s := range rounds {
		x := admitShare(s)
		if i == 0 || x < lo {
			lo, low = x, s
		}
		hi = max(hi, x)
		if s.Admission.Over > 0 {
			over++
		}
	}
	return lo, hi, low, over
}

// pairedRatios are the same-round ratios of decisions/s of two cells of
// the section, sorted.
func (r *report) pairedRatios(num, den string, conc int) []float64 {
	byRound := map[int]sample{}
	for _, s := range r.samples[cell{den, clusterSetup, 1, conc}] {
		byRound[s.Round] = s
	}
	var out []float64
	for _, s := range r.samples[cell{num, clusterSetup, 1, conc}] {
		if d, ok := byRound[s.Round]; ok && d.PerSec > 0 && s.Decisions > 0 {
			out = append(out, s.PerSec/d.PerSec)
		}
	}
	sort.Float64s(out)
	return out
}

func (r *report) shardTargets() []target {
	var out []target
	one := func(what string, m measure, ok bool) {
		if ok {
			out = append(out, target{what: what, by: map[string]measure{clusterSetup: m}})
		}
	}
	{
		a, ok1 := r.shardGet(shardName(3, 3), 64)
		b, ok2 := r.shardGet(shardName(1, 3), 64)
		x, ok3 := r.shardRatio(shardName(3, 3), shardName(1, 3), 64)
		one(fmt.Sprintf("Hot key on a 3-master Redis Cluster, concurrency 64: WithShards(3) ≥ %g× the decisions/s of WithShards(1)", wantShardSpeedup),
			measure{text: fmt.Sprintf("%.2f× (%s/s vs %s/s)", x, thousands(a.PerSec), thousands(b.PerSec)), met: x >= wantShardSpeedup},
			ok1 && ok2 && ok3)
	}
	rounds := r.admissionRounds(admitName(3, 3), 64)
	if len(rounds) > 0 {
		s, _ := r.shardGet(admitName(3, 3), 64)
		lo, hi, _, over := admissionSpread(rounds)
		lim := admitLimit
		what := fmt.Sprintf("WithShards(3) on 3 masters, concurrency 64, limit %s/s burst %s: admitted", thousands(float64(lim.Rate)), thousands(float64(lim.Capacity())))
		one(what+" ≤ burst + rate × elapsed (Redis TIME) in every round",
			measure{text: fmt.Sprintf("%d of %d rounds over; highest %s of the bound (most over: %s)", over, len(rounds), pct(hi), thousands(float64(s.Admission.Over))),
				met: over == 0},
			true)
		one(what+fmt.Sprintf(" ≥ %.0f%% of that bound in every round", 100*wantAdmitShare),
			measure{text: fmt.Sprintf("lowest round %s; medians of admitted and of the bound %s/%s (%s)", pct(lo),
				thousands(float64(s.Admission.Admitted)), thousands(float64(s.Admission.Bound)), pct(float64(s.Admission.Admitted)/float64(s.Admission.Bound))),
				met: lo >= wantAdmitShare},
			true)
	}
	return out
}

// shardsSection writes the section "Hot keys on Redis Cluster: sharded
// buckets": what is measured, the throughput and admission tables, and
// what the figures show, in sentences made from them.
func (r *report) shardsSection(w func(string, ...any)) {
	if len(r.scases) == 0 {
		return
	}
	e := r.env
	w("## %s\n\n", shardsTitle)
	w("Every caller here asks about one identity. Without sharding that is one key, so on a Redis Cluster one master\n")
	w("decides all of it however many masters there are. `ratelimit.WithShards(n)` splits the identity's limit over n\n")
	w("keys in n hash slots spread evenly over the slot space; on a cluster whose masters hold equal slot ranges (as\n")
	w("`redis-cli --cluster create` assigns them) they land on min(n, masters) masters. Each shard holds rate/n and\n")
	w("burst/n; a call takes its cost from a shard picked at random and, when that one denies, asks the next, up to every\n")
	w("shard (the default `WithShardTries`), before it is denied. Measured here: the decisions/s and latency one hot\n")
	w("identity gets with 1, 2, 3 and 6 shards on 3 masters (and 1 and 3 on 1 master, where the shards share one\n")
	w("thread), and whether a sharded limit under saturating load admits what the limit allows, no more and not much less.\n\n")
	if e.Shards != nil && e.Shards.Skipped != "" {
		w("**Not measured in this run:** %s.\n\n", strings.TrimSpace(e.Shards.Skipped))
		return
	}
	pool := 0
	if e.Shards != nil {
		pool = e.Shards.PoolSize
	}
	w("- Clusters: started by the benchmark on loopback free ports, one of 3 masters (slots split by `redis-cli --cluster\n")
	w("  create`) and one of 1 master (all 16384 slots, `CLUSTER ADDSLOTS`), no replicas, persistence off, redis-server %s,\n", e.RedisVersion)
	w("  on this machine; stopped at the end of the run.\n")
	w("- Client: one `redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})` per cluster, go-redis's default options\n")
	w("  (`PoolSize` %d per node, no `ContextTimeoutEnabled`), used by every case of the section, as a program would.\n", pool)
	w("- Limiter: `ratelimit.New(client, limit, WithNamespace(\"bench\"), WithShards(n))`, otherwise the defaults (token\n")
	w("  bucket, pipelining on, 100 ms backend timeout), made afresh for each cell; `FLUSHALL` on every master first.\n")
	w("  With pipelining on, one limiter keeps at most 2 round trips in flight, each carrying the calls queued meanwhile as\n")
	w("  one script call per shard (per slot): so with n shards one round trip goes to min(n, masters) masters (go-redis\n")
	w("  splits the pipeline per node) and ends with the last reply. The `shards-nopipe-*` cases turn pipelining off\n")
	w("  (`WithPipelining(false)`): each call is one script call (FCALL) to its shard's master, on the client's per-node pool.\n")
	w("- Throughput cases (`shards-n<n>-m<masters>`): limit %s/s (burst the same), never reached, so every call is\n", thousands(rate))
	w("  allowed and a denial would count as an error. Decisions/s, p50 and p99 as everywhere in this file; \"× 1 shard\" is\n")
	w("  the median over rounds of the ratio to WithShards(1) on the same cluster at the same concurrency, in the same round.\n")
	w("  Script calls: FCALL + EVALSHA + EVAL from `INFO commandstats` of every master, after `CONFIG RESETSTAT`; \"masters used\"\n")
	w("  are those that ran any, with the busiest one's share. CPU busy: the masters' `used_cpu_sys + used_cpu_user` and this\n")
	w("  process's (`getrusage`) over the cell, in cores.\n")
	w("- Admission cases (`shards-admit-n<n>-m3`): limit %s/s with burst %s, which %d callers saturate. The identity's\n",
		thousands(float64(admitLimit.Rate)), thousands(float64(admitLimit.Capacity())), 64)
	w("  admissions over warm-up and measurement are compared with burst + rate × elapsed, elapsed read with `TIME` on one\n")
	w("  master before the first call and after the last (the masters share this machine's clock).\n")
	w("- **This machine has %d CPUs (%s) for the client and all of a cluster's redis-server processes: 3 of them for the\n", e.CPUs, e.CPUModel)
	w("  3-master cluster.** A master's thread runs only when a CPU is free of the client and the other masters, which bounds\n")
	w("  the scaling over masters this run can show; the CPU columns say how busy the CPUs were.\n\n")

	// Throughput.
	w("| Masters | Shards | Pipelining | Conc. | Decisions/s | × 1 shard (same round) | p50 | p99 | Masters used (busiest's share of script calls) | Decisions per script call | Script calls/s on the busiest master | Redis CPU/decision (all masters) | CPU of the busiest master (cores) | CPU busy: Redis + client (of %d) | Errors |\n", e.CPUs)
	w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range shardCellsOf(r.cfg, r.scases) {
		sc, _ := shardCaseNamed(r.scases, c.Case)
		if sc.admit {
			continue
		}
		s, _ := r.shardGet(c.Case, c.Conc)
		x := "–"
		if sc.shards != 1 {
			if v, ok := r.shardRatio(c.Case, sc.base(), c.Conc); ok {
				x = fmt.Sprintf("%.2f×", v)
			}
		}
		pipe := "on"
		if sc.nopipe {
			pipe = "off"
		}
		w("| %d | %d | %s | %d | %s | %s | %s | %s | %.0f (%s) | %s | %s | %.1f µs | %.2f | %.2f + %.2f | %s |\n",
			sc.masters, sc.shards, pipe, c.Conc, thousands(s.PerSec), x, fmtUS(s.P50), fmtUS(s.P99),
			s.MastersUsed, pct(s.BusiestShare), perScriptCall(s), thousands(busiestCalls(s)), s.RedisCPU, s.TopMasterCores,
			s.RedisCores, s.ClientCores, errCell(s))
	}
	w("\n")

	// Admission.
	var admits []cell
	for _, c := range shardCellsOf(r.cfg, r.scases) {
		if sc, _ := shardCaseNamed(r.scases, c.Case); sc.admit {
			admits = append(admits, c)
		}
	}
	if len(admits) > 0 {
		w("Admission under saturating load (limit %s/s, burst %s):\n\n", thousands(float64(admitLimit.Rate)), thousands(float64(admitLimit.Capacity())))
		w("| Masters | Shards | Conc. | Decisions/s | p50 | p99 | Denied | Script calls per decision | Admitted / bound (medians) | Admitted / bound: median (lowest – highest round) | Rounds over the bound | Errors |\n")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range admits {
			sc, _ := shardCaseNamed(r.scases, c.Case)
			s, _ := r.shardGet(c.Case, c.Conc)
			adm, spread, over := "–", "–", "–"
			if rounds := r.admissionRounds(c.Case, c.Conc); len(rounds) > 0 && s.Admission != nil {
				lo, hi, _, n := admissionSpread(rounds)
				adm = fmt.Sprintf("%s / %s in %.2f s", thousands(float64(s.Admission.Admitted)), thousands(float64(s.Admission.Bound)), s.Admission.RedisSeconds)
				spread = fmt.Sprintf("%s (%s – %s)", pct(medianOf(rounds, admitShare)), pct(lo), pct(hi))
				over = fmt.Sprintf("%d of %d", n, len(rounds))
			}
			w("| %d | %d | %d | %s | %s | %s | %s | %.2f | %s | %s | %s | %s |\n",
				sc.masters, sc.shards, c.Conc, thousands(s.PerSec), fmtUS(s.P50), fmtUS(s.P99), pct(s.DeniedShare),
				s.ScriptCalls, adm, spread, over, errCell(s))
		}
		w("\n")
	}

	if lines := r.shardFindings(); len(lines) > 0 {
		w("What these figures show (sentences made from them by the benchmark):\n\n")
		for _, l := range lines {
			w("- %s\n", l)
		}
		w("\n")
	}
}

// busiestCalls is the script calls per second the busiest master ran (from
// the medians: decisions/s × script calls per decision × its share).
func busiestCalls(s summary) float64 { return s.PerSec * s.ScriptCalls * s.BusiestShare }

// medianOf is the median of f over rounds.
func medianOf(rounds []sample, f func(sample) float64) float64 {
	v := make([]float64, len(rounds))
	for i, a := range rounds {
		v[i] = f(a)
	}
	return median(v)
}

// shardFindings states what the figures show: the speed-up against the
// target, where the shards ran, how busy the CPUs were, and the admission
// check. Each sentence is made only from figures of this run.
func (r *report) shardFindings() []string {
	var out []string
	cpus := float64(r.env.CPUs)
	for _, conc := range []int{64, 16} {
		n1, ok1 := r.shardGet(shardName(1, 3), conc)
		n3, ok3 := r.shardGet(shardName(3, 3), conc)
		x, okx := r.shardRatio(shardName(3, 3), shardName(1, 3), conc)
		if !ok1 || !ok3 || !okx {
			continue
		}
		line := fmt.Sprintf("3 masters, %d callers: WithShards(3) %s/s against WithShards(1) %s/s, **%.2f×**", conc, thousands(n3.PerSec), thousands(n1.PerSec), x)
		if conc == 64 {
			verdict := "met"
			if x < wantShardSpeedup {
				verdict = "missed"
			}
			line += fmt.Sprintf(" (issue 14's target, ≥ %g×: %s)", wantShardSpeedup, verdict)
		}
		line += fmt.Sprintf("; p99 %s against %s. The 3 shards ran on %.0f master(s), the busiest running %s of the script calls (1 shard: %.0f, %s): "+
			"%s script calls/s on the busiest master against %s/s on the one of WithShards(1), %s decisions per script call against %s.",
			fmtUS(n3.P99), fmtUS(n1.P99), n3.MastersUsed, pct(n3.BusiestShare), n1.MastersUsed, pct(n1.BusiestShare),
			thousands(busiestCalls(n3)), thousands(busiestCalls(n1)), perScriptCall(n3), perScriptCall(n1))
		busy1, busy3 := n1.RedisCores+n1.ClientCores, n3.RedisCores+n3.ClientCores
		line += fmt.Sprintf(" CPU: the one master of WithShards(1) used %.2f of a core, the busiest of WithShards(3) %.2f; "+
			"busy in all (Redis + client) %.2f cores (%.2f + %.2f) with 1 shard, %.2f (%.2f + %.2f) with 3, of %d "+
			"(other processes: %.2f cores over the whole run).",
			n1.TopMasterCores, n3.TopMasterCores, busy1, n1.RedisCores, n1.ClientCores, busy3, n3.RedisCores, n3.ClientCores,
			r.env.CPUs, r.env.OtherCPU)
		if rs := r.pairedRatios(shardName(3, 3), shardName(1, 3), conc); len(rs) > 1 {
			line += fmt.Sprintf(" Same-round ratios ranged from %.2f× to %.2f× over %d rounds.", rs[0], rs[len(rs)-1], len(rs))
		}
		switch free := cpus - r.env.OtherCPU; {
		case n1.TopMasterCores < 0.9 && busy1 < 0.85*free:
			line += " With 1 shard neither the master's one thread nor the CPUs were saturated: in this cell the one master was " +
				"not the bottleneck that the shards remove."
		case busy3 >= 0.85*free:
			line += fmt.Sprintf(" With 3 shards the benchmark's %.2f cores and other processes' %.2f (their average over the run) came to "+
				"%.2f of the %d CPUs: the masters' threads and the client had little more CPU to run on; what the shards give with a "+
				"core per master is not measured here.", busy3, r.env.OtherCPU, busy3+r.env.OtherCPU, r.env.CPUs)
		}
		if busy1 > 0 && conc == 64 {
			// The CPU the 1-shard cell spent per decision bounds what any
			// spread can reach on this machine.
			perDecision := busy1 / n1.PerSec * 1e6
			line += fmt.Sprintf(" At the 1-shard cell's CPU per decision (Redis %.1f µs + client %.1f µs = %.1f µs), %d CPUs can make "+
				"at most %s decisions/s, %.2f× that cell, with nothing else running", n1.RedisCores/n1.PerSec*1e6, n1.ClientCores/n1.PerSec*1e6,
				perDecision, r.env.CPUs, thousands(cpus/perDecision*1e6), cpus/busy1)
			if cpus/busy1 < wantShardSpeedup {
				line += fmt.Sprintf(": a %g× speed-up cannot be shown on this machine unless the shards made a decision cheaper, and "+
					"with 3 shards it cost %.1f µs", wantShardSpeedup, busy3/n3.PerSec*1e6)
			}
			line += "."
		}
		out = append(out, line)
	}
	for _, conc := range []int{64, 16} {
		n1, ok1 := r.shardGet(nopipeName(1, 3), conc)
		n3, ok3 := r.shardGet(nopipeName(3, 3), conc)
		x, okx := r.shardRatio(nopipeName(3, 3), nopipeName(1, 3), conc)
		if !ok1 || !ok3 || !okx {
			continue
		}
		line := fmt.Sprintf("Without pipelining, 3 masters, %d callers: WithShards(3) %s/s against WithShards(1) %s/s, **%.2f×**; p50 %s against %s; "+
			"busiest master %s of script calls; CPU busy %.2f (Redis %.2f + client %.2f) with 3 shards.",
			conc, thousands(n3.PerSec), thousands(n1.PerSec), x, fmtUS(n3.P50), fmtUS(n1.P50), pct(n3.BusiestShare),
			n3.RedisCores+n3.ClientCores, n3.RedisCores, n3.ClientCores)
		if y, ok := r.shardRatio(nopipeName(3, 3), shardName(1, 3), conc); ok {
			line += fmt.Sprintf(" Against the pipelined WithShards(1) of the same round: %.2f×.", y)
		}
		out = append(out, line)
	}
	for _, n := range []int{2, 6} {
		if x, ok := r.shardRatio(shardName(n, 3), shardName(1, 3), 64); ok {
			s, _ := r.shardGet(shardName(n, 3), 64)
			out = append(out, fmt.Sprintf("3 masters, 64 callers, WithShards(%d): %s/s, %.2f× WithShards(1), on %.0f master(s) (busiest %s of script calls).",
				n, thousands(s.PerSec), x, s.MastersUsed, pct(s.BusiestShare)))
		}
	}
	if x, ok := r.shardRatio(shardName(3, 1), shardName(1, 1), 64); ok {
		a, _ := r.shardGet(shardName(3, 1), 64)
		b, _ := r.shardGet(shardName(1, 1), 64)
		out = append(out, fmt.Sprintf("1 master, 64 callers: WithShards(3) %s/s against WithShards(1) %s/s, %.2f×: the shards' keys on one master, "+
			"what sharding does without more masters to spread over.", thousands(a.PerSec), thousands(b.PerSec), x))
	}
	for _, n := range []int{3, 1} {
		rounds := r.admissionRounds(admitName(n, 3), 64)
		s, ok := r.shardGet(admitName(n, 3), 64)
		if len(rounds) == 0 || !ok || s.Admission == nil {
			continue
		}
		lo, hi, low, over := admissionSpread(rounds)
		overTxt := "never above the bound"
		if over > 0 {
			overTxt = fmt.Sprintf("**above the bound in %d round(s)**", over)
		}
		line := fmt.Sprintf("Admission, 3 masters, WithShards(%d), 64 callers: admitted %s of burst + rate × elapsed (median; lowest round %s, highest %s), %s in %d round(s); "+
			"%s of calls denied, %.2f script calls per decision.",
			n, pct(medianOf(rounds, admitShare)), pct(lo), pct(hi), overTxt, len(rounds), pct(s.DeniedShare), s.ScriptCalls)
		if lo < wantAdmitShare {
			line += fmt.Sprintf(" The lowest round (%d) admitted %s of %s in %.2f s of Redis time (median round: %.2f s), with p99 %s and %s call(s) in error",
				low.Round+1, thousands(float64(low.Admission.Admitted)), thousands(float64(low.Admission.Bound)), low.Admission.RedisSeconds,
				s.Admission.RedisSeconds, fmtUS(low.P99), thousands(float64(low.Errors)))
			if low.FirstErr != "" {
				line += fmt.Sprintf(" (the first: %q)", low.FirstErr)
			}
			refill := time.Duration(float64(admitLimit.Per) * float64(admitLimit.Capacity()) / float64(admitLimit.Rate))
			line += fmt.Sprintf(". A bucket holds no more than its burst, so a shard (or the whole limit) whose callers stall for longer "+
				"than burst / rate (%v) loses what it would refill meanwhile; stalls are not measured beyond the p99 and the errors.", refill)
		}
		out = append(out, line)
	}
	return out
}

// shardsSectionAlone is the section as it appears in BENCHMARKS.md, with
// the command and the machine it ran on above it and the section's rows of
// the targets table below it (-shards-out), to be pasted into a
// BENCHMARKS.md written by another run.
func (r *report) shardsSectionAlone() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	e := r.env
	w("<!-- Generated by bench/ (%s -shards-out FILE): the section of BENCHMARKS.md alone, with the rows it adds to the targets table. -->\n\n", r.command())
	if r.cfg.smoke {
		w("**Smoke run: every cell ran for a moment only. No figure here means anything.**\n\n")
	}
	w("Measured with\n\n```sh\n%s\n```\n\n", r.command())
	w("on %d × %s, Linux %s, %s, redis-server %s", e.CPUs, e.CPUModel, e.Kernel, e.GoVersion, e.RedisVersion)
	if e.Commit != "" {
		w(", commit %s", e.Commit)
	}
	w("; %s, %d round(s) of %v per cell after %v of warm-up; load average before %s, after %s; other processes used %.2f cores on average.\n\n",
		e.Started.Format("2006-01-02 15:04 MST"), r.cfg.rounds, r.cfg.dur, r.cfg.warm, e.LoadBefore, e.LoadAfter, e.OtherCPU)
	r.shardsSection(w)
	if ts := r.shardTargets(); len(ts) > 0 {
		w("Rows of the targets table (issue 14):\n\n")
		writeTargetRows(w, ts, []string{clusterSetup})
	}
	return b.String()
}

// median is the median of v (0 for none); v is sorted in place.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
