package main

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShardCases: every case of the section has a distinct name that -cases
// selects alone, none is a name of the single-server cases, and the cells
// follow -conc.
func TestShardCases(t *testing.T) {
	names := map[string]bool{}
	for _, bc := range allCases() {
		names[bc.Name] = true
	}
	for _, sc := range allShardCases() {
		if names[sc.Name] {
			t.Errorf("case %s twice", sc.Name)
		}
		names[sc.Name] = true
		cfg := config{cases: regexp.MustCompile("^" + sc.Name + "$"), concs: []int{1, 16, 64, 256}}
		if got := selectShardCases(cfg); len(got) != 1 || got[0].Name != sc.Name {
			t.Errorf("-cases ^%s$ selects %v", sc.Name, got)
		}
	}
	cfg := config{cases: regexp.MustCompile("shards"), concs: []int{1, 64}}
	for _, c := range shardCellsOf(cfg, selectShardCases(cfg)) {
		if c.Conc != 64 || c.Setup != clusterSetup || c.Keys != 1 {
			t.Errorf("cell %v with -conc 1,64", c)
		}
	}
	for _, want := range []string{"shards-n1-m3", "shards-n3-m3", "shards-n6-m3", "shards-n3-m1", "shards-admit-n3-m3"} {
		if !names[want] {
			t.Errorf("no case %s", want)
		}
	}
}

// TestShardReport: the section and its targets from made-up samples of two
// rounds: the ratio is the median of same-round ratios, the admission
// targets look at every round.
func TestShardReport(t *testing.T) {
	cfg := config{cases: regexp.MustCompile("shards-(n[13]-m3|admit-n3-m3)$"), concs: []int{64}, rounds: 2, setups: setupNames}
	scases := selectShardCases(cfg)
	samples := map[cell][]sample{}
	add := func(name string, s ...sample) { samples[cell{name, clusterSetup, 1, 64}] = s }
	add("shards-n1-m3", sample{Round: 0, Decisions: 1, PerSec: 100}, sample{Round: 1, Decisions: 1, PerSec: 50})
	add("shards-n3-m3", sample{Round: 0, Decisions: 1, PerSec: 300}, sample{Round: 1, Decisions: 1, PerSec: 75})
	add("shards-admit-n3-m3",
		sample{Round: 0, Decisions: 1, Admission: &abuseCheck{Admitted: 950, Bound: 1000}},
		sample{Round: 1, Decisions: 1, Admission: &abuseCheck{Admitted: 880, Bound: 1000}})
	var sums []summary
	for _, c := range shardCellsOf(cfg, scases) {
		sums = append(sums, summarize(c, samples[c]))
	}
	r := &report{cfg: cfg, env: &environ{CPUs: 2}, scases: scases, sums: sums, samples: samples}
	ts := r.targets()
	if len(ts) != 3 {
		t.Fatalf("%d targets; want 3", len(ts))
	}
	// Same-round ratios 3 and 1.5: median 2.25, met.
	if m := ts[0].by[clusterSetup]; !m.met || !strings.HasPrefix(m.text, "2.25×") {
		t.Errorf("speed-up target: %+v", m)
	}
	if m := ts[1].by[clusterSetup]; !m.met {
		t.Errorf("bound target: %+v", m)
	}
	// 88% in one round: missed, though the median is 91.5%.
	if m := ts[2].by[clusterSetup]; m.met || !strings.Contains(m.text, "lowest round 88.0%") {
		t.Errorf("90%% target: %+v", m)
	}
	md := r.markdown()
	for _, want := range []string{"## " + shardsTitle, "## Targets (issue 14)", "| 3 | 3 | on | 64 | 188 | 2.25× |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "## The cases") || strings.Contains(md, "](benchmarks.svg)") {
		t.Errorf("report of the section alone has the single-server sections:\n%s", md)
	}
	r.env.Shards = &shardEnv{Skipped: "no Redis Cluster on this machine: redis-cli not found"}
	if md := r.markdown(); !strings.Contains(md, "**Not measured in this run:** no Redis Cluster") {
		t.Errorf("skipped section:\n%s", md)
	}
}

// TestClusterStartStop starts the two clusters of the section and stops
// them: every node answers as a cluster first, and no node is left after.
func TestClusterStartStop(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil && !requireRedis() {
		t.Skip("redis-server not installed")
	}
	ctx := context.Background()
	for _, masters := range []int{1, 3} {
		c, err := startCluster(ctx, masters)
		if errors.Is(err, errNoCluster) && !requireRedis() {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		var procs []*server
		procs = append(procs, c.nodes...)
		if len(procs) != masters {
			t.Errorf("%d nodes; want %d", len(procs), masters)
		}
		c.stop()
		c.stop() // harmless
		for _, p := range procs {
			if p.cmd.ProcessState == nil || syscall.Kill(p.cmd.Process.Pid, 0) == nil {
				t.Errorf("node %s (pid %d) still running", p.addr, p.cmd.Process.Pid)
			}
			if err := waitPing(p.addr, 50*time.Millisecond); err == nil {
				t.Errorf("node %s still answers", p.addr)
			}
		}
	}
}

// TestShardCellCountsScriptCalls: a short cell of WithShards(3) on 3
// masters finds the library's script calls (FCALL on Redis 7) on all three,
// so that the section's "masters used" column is measured, not zero.
func TestShardCellCountsScriptCalls(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil && !requireRedis() {
		t.Skip("redis-server not installed")
	}
	cfg := config{cases: regexp.MustCompile("^shards-n3-m3$"), concs: []int{16}, rounds: 1,
		dur: 200 * time.Millisecond, warm: 50 * time.Millisecond, maxCalls: 1 << 20}
	env := &environ{}
	samples := map[cell][]sample{}
	if err := runShards(context.Background(), cfg, selectShardCases(cfg), env, samples); err != nil {
		t.Fatal(err)
	}
	if env.Shards != nil && env.Shards.Skipped != "" {
		t.Skip(env.Shards.Skipped)
	}
	if len(samples) != 1 {
		t.Fatalf("%d cells; want 1", len(samples))
	}
	for c, ss := range samples {
		if s := ss[0]; s.MastersUsed != 3 || s.BusiestShare <= 0 || s.BusiestShare >= 0.9 {
			t.Errorf("%v: masters used %d, busiest share %.2f; want 3 masters, none with nearly all script calls", c, s.MastersUsed, s.BusiestShare)
		}
	}
}
