package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// The section "Hot keys on Redis Cluster: sharded buckets" (issue 14):
// one hot identity on a Redis Cluster, with ratelimit.WithShards(n), which
// splits its limit over n keys in n slots spread over the slot space, so
// that on a cluster whose masters hold equal slot ranges the shards land on
// min(n, masters) masters. Its cells run on clusters the benchmark starts,
// through one redis.ClusterClient per cluster with go-redis's default
// options, after the single-server cells.

// clusterSetup is the Setup of the section's cells: one ClusterClient with
// go-redis's default options per cluster, shared by the section's cases.
const clusterSetup = "cluster"

// hotIdentity is the one identity of every cell of the section.
const hotIdentity = "tenant:hot"

// shardCase is one case of the section: a number of shards on a cluster of
// a number of masters, for throughput (a limit never reached) or for
// admission (a limit the callers saturate).
type shardCase struct {
	Name    string // shards-n3-m3, shards-admit-n3-m3: selected by -cases
	masters int
	shards  int
	admit   bool
	// nopipe turns the library's pipelining off (WithPipelining(false)):
	// each call its own script call (FCALL) to its shard's master, where a pipelined
	// round trip carries the queued calls of every shard at once.
	nopipe bool
	concs  []int // the concurrencies it runs at (those of -conc among them)
}

// base is the name of the 1-shard case this case is compared with: same
// cluster, same pipelining.
func (sc shardCase) base() string {
	if sc.nopipe {
		return nopipeName(1, sc.masters)
	}
	return shardName(1, sc.masters)
}

// admitLimit is the admission cases' limit: 5,000 a second with bursts of
// 500. 64 callers on this machine ask for ten times that or more, so the
// bucket is empty nearly all the time and every admission is one the limit
// had to grant.
var admitLimit = ratelimit.PerSecond(5000).WithBurst(500)

// The section's cases: throughput for 1, 2, 3 and 6 shards on 3 masters and
// for 1 and 3 on 1 master (the shards then share its one thread), at 16 and
// 64 callers, and 1 and 3 on 3 masters without pipelining; admission for 1
// and 3 shards on 3 masters at 64.
func allShardCases() []shardCase {
	var out []shardCase
	for _, m := range []struct{ masters, shards int }{{3, 1}, {3, 2}, {3, 3}, {3, 6}, {1, 1}, {1, 3}} {
		out = append(out, shardCase{Name: shardName(m.shards, m.masters),
			masters: m.masters, shards: m.shards, concs: []int{16, 64}})
	}
	// The same without pipelining, on 3 masters: whether the shards spread
	// when no round trip waits on several masters.
	for _, n := range []int{1, 3} {
		out = append(out, shardCase{Name: nopipeName(n, 3), masters: 3, shards: n, nopipe: true, concs: []int{16, 64}})
	}
	for _, n := range []int{1, 3} {
		out = append(out, shardCase{Name: admitName(n, 3), masters: 3, shards: n, admit: true, concs: []int{64}})
	}
	return out
}

func (sc shardCase) limit() ratelimit.Limit {
	if sc.admit {
		return admitLimit
	}
	return ratelimit.PerSecond(rate)
}

// shardCellsOf lists the section's cells of the run in report order:
// throughput before admission, masters (most first), concurrency, shards.
func shardCellsOf(cfg config, scases []shardCase) []cell {
	var out []cell
	for _, admit := range []bool{false, true} {
		for _, m := range []int{3, 1} {
			for _, conc := range cfg.concs {
				for _, sc := range scases {
					if sc.admit == admit && sc.masters == m && slices.Contains(sc.concs, conc) {
						out = append(out, cell{Case: sc.Name, Setup: clusterSetup, Keys: 1, Conc: conc})
					}
				}
			}
		}
	}
	return out
}

func selectShardCases(cfg config) []shardCase {
	var out []shardCase
	for _, sc := range allShardCases() {
		if cfg.cases.MatchString(sc.Name) {
			out = append(out, sc)
		}
	}
	return out
}

func shardCaseNamed(scases []shardCase, name string) (shardCase, bool) {
	for _, sc := range scases {
		if sc.Name == name {
			return sc, true
		}
	}
	return shardCase{}, false
}

// shardEnv is what the report says about the section's setting.
type shardEnv struct {
	// Skipped, when set, is why the section did not run.
	Skipped string `json:"skipped,omitempty"`
	// PoolSize is go-redis's default ClusterOptions.PoolSize, per node.
	PoolSize int `json:"pool_size,omitempty"`
}

// requireRedis reports whether a missing Redis (or Cluster) must fail the
// run rather than skip: RATELIMIT_REQUIRE_REDIS=1, as CI sets it.
func requireRedis() bool { return os.Getenv("RATELIMIT_REQUIRE_REDIS") == "1" }

// clusterRig is one started cluster, its default client and a plain client
// per node for the benchmark's own commands (FLUSHALL, INFO, TIME), so that
// they never queue in the measured client's pools.
type clusterRig struct {
	c     *cluster
	cc    *redis.ClusterClient
	nodes []*redis.Client
}

func (g *clusterRig) close() {
	if g.cc != nil {
		_ = g.cc.Close()
	}
	for _, n := range g.nodes {
		_ = n.Close()
	}
	g.c.stop()
}

// runShards runs the section's cells, round after round, interleaved as the
// other cells are, on clusters it starts and stops. When no cluster can be
// had it records why in env and returns nil, unless requireRedis.
func runShards(ctx context.Context, cfg config, scases []shardCase, env *environ, samples map[cell][]sample) (err error) {
	cells := shardCellsOf(cfg, scases)
	if len(cells) == 0 {
		return nil
	}
	env.Shards = &shardEnv{}
	rigs := map[int]*clusterRig{}
	defer func() {
		for _, g := range rigs {
			// Their CPU is the benchmark's, not other processes'.
			for _, n := range g.nodes {
				if s, err := cpuSeconds(context.Background(), n); err == nil {
					env.extraRedisCPU += s
				}
			}
			g.close()
		}
	}()
	for _, sc := range scases {
		if rigs[sc.masters] != nil {
			continue
		}
		c, err := startCluster(ctx, sc.masters)
		if err != nil {
			if errors.Is(err, errNoCluster) && !requireRedis() {
				env.Shards.Skipped = err.Error()
				fmt.Fprintf(os.Stderr, "bench: skipping the sharded-buckets section (set RATELIMIT_REQUIRE_REDIS=1 to fail instead): %v\n", err)
				return nil
			}
			return fmt.Errorf("cluster of %d master(s): %w", sc.masters, err)
		}
		g := &clusterRig{c: c}
		rigs[sc.masters] = g
		// As a user would make it: the nodes' addresses, nothing else.
		g.cc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.addrs()})
		env.Shards.PoolSize = g.cc.Options().PoolSize
		for _, a := range c.addrs() {
			g.nodes = append(g.nodes, redis.NewClient(&redis.Options{Addr: a}))
		}
		if err := g.cc.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("cluster of %d master(s): %w", sc.masters, err)
		}
	}

	drv := &runner{maxCalls: cfg.maxCalls}
	total := cfg.rounds * len(cells)
	done := 0
	for round := range cfg.rounds {
		for _, conc := range cfg.concs {
			var todo []cell
			for _, c := range cells {
				if c.Conc == conc {
					todo = append(todo, c)
				}
			}
			for i := range todo {
				c := todo[(i+round)%len(todo)]
				sc, _ := shardCaseNamed(scases, c.Case)
				if err := ctx.Err(); err != nil {
					return err
				}
				s, err := runShardCell(ctx, drv, rigs[sc.masters], sc, cfg, conc, round)
				if err != nil {
					return fmt.Errorf("%s, concurrency %d: %w", sc.Name, conc, err)
				}
				samples[c] = append(samples[c], s)
				done++
				adm := ""
				if a := s.Admission; a != nil {
					adm = fmt.Sprintf(" admitted %d / bound %d (%.1f%%)", a.Admitted, a.Bound, 100*float64(a.Admitted)/float64(a.Bound))
				}
				fmt.Fprintf(os.Stderr, "[shards %d/%d] round %d conc %-3d %-20s %9.0f/s p50 %7.1fµs p99 %8.1fµs cores redis %.2f client %.2f errors %d%s\n",
					done, total, round+1, conc, sc.Name, s.PerSec, s.P50, s.P99, s.RedisCores, s.ClientCores, s.Errors, adm)
			}
		}
	}
	return nil
}

// runShardCell measures one cell: a fresh limiter with WithShards on the
// cluster's shared client, FLUSHALL on every master first, warm-up, then
// the measured drive. Redis CPU and commands are summed over the masters.
func runShardCell(ctx context.Context, drv *runner, g *clusterRig, sc shardCase, cfg config, conc, round int) (sample, error) {
	for _, n := range g.nodes {
		if err := n.FlushAll(ctx).Err(); err != nil {
			return sample{}, err
		}
	}
	// The library's defaults (pipelining on) but for the shards.
	opts := []ratelimit.Option{ratelimit.WithNamespace("bench"), ratelimit.WithShards(sc.shards)}
	if sc.nopipe {
		opts = append(opts, ratelimit.WithPipelining(false))
	}
	l, err := ratelimit.New(g.cc, sc.limit(), opts...)
	if err != nil {
		return sample{}, err
	}
	defer l.Close()
	decide := func(ctx context.Context, key string) (verdict, error) {
		res, err := l.Allow(ctx, key)
		return ourVerdict(res), err
	}
	keys := []string{hotIdentity}
	var who []int
	if sc.admit {
		who = []int{0} // count the admissions of the one identity
	}
	hists := make([]*hist, conc)
	for i := range hists {
		hists[i] = new(hist)
	}
	// The admission check counts from the first call: Redis's clock (one
	// node's; they share this machine's clock) before it.
	t0, err := g.nodes[0].Time(ctx).Result()
	if err != nil {
		return sample{}, err
	}
	warm := drv.drive(ctx, decide, keys, who, sc.admit, conc, cfg.warm, hists)
	for _, h := range hists {
		*h = hist{}
	}
	for _, n := range g.nodes {
		if err := n.ConfigResetStat(ctx).Err(); err != nil {
			return sample{}, err
		}
	}
	cpu0, err := nodesCPU(ctx, g.nodes)
	if err != nil {
		return sample{}, err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	self0 := selfCPU()
	d := drv.drive(ctx, decide, keys, who, sc.admit, conc, cfg.dur, hists)
	self1 := selfCPU()
	runtime.ReadMemStats(&m1)
	cpu1, err := nodesCPU(ctx, g.nodes)
	if err != nil {
		return sample{}, err
	}
	t1, err := g.nodes[0].Time(ctx).Result()
	if err != nil {
		return sample{}, err
	}

	s := sample{
		Round:     round,
		Decisions: d.ok,
		Errors:    d.errs,
		FirstErr:  d.firstErr,
		Denied:    d.denied,
		Seconds:   d.elapsed.Seconds(),
		Cmds:      map[string]cmdUse{},
	}
	var h hist
	for _, x := range hists {
		h.merge(x)
	}
	s.P50, s.P99, s.P999 = us(h.quantile(0.50)), us(h.quantile(0.99)), us(h.quantile(0.999))
	if secs := d.elapsed.Seconds(); secs > 0 {
		var redisCPU float64
		for i := range cpu0 {
			redisCPU += cpu1[i] - cpu0[i]
			s.TopMasterCores = max(s.TopMasterCores, (cpu1[i]-cpu0[i])/secs)
		}
		s.RedisCores = redisCPU / secs
		s.ClientCores = (self1 - self0) / secs
	}
	// Commands summed over the masters; script calls per master.
	total := map[string]cmdStat{}
	var scripts []int64
	for _, n := range g.nodes {
		st, err := commandStats(ctx, n)
		if err != nil {
			return sample{}, err
		}
		var calls int64
		for name, v := range st {
			if name == "info" || name == "config|resetstat" || name == "config" || name == "time" || v.Calls == 0 {
				continue // the benchmark's own
			}
			t := total[name]
			t.Calls += v.Calls
			t.Usec += v.Usec
			total[name] = t
			if isScriptCall(name) {
				calls += v.Calls
			}
		}
		scripts = append(scripts, calls)
	}
	var all, most int64
	for _, c := range scripts {
		all += c
		most = max(most, c)
		if c > 0 {
			s.MastersUsed++
		}
	}
	if all > 0 {
		s.BusiestShare = float64(most) / float64(all)
	}
	if d.ok > 0 {
		n := float64(d.ok)
		s.PerSec = n / d.elapsed.Seconds()
		s.Allocs = float64(m1.Mallocs-m0.Mallocs) / n
		s.RedisCPU = (s.RedisCores * d.elapsed.Seconds()) * 1e6 / n
		for name, st := range total {
			s.Cmds[name] = cmdUse{PerDecision: float64(st.Calls) / n, USPerCall: float64(st.Usec) / float64(st.Calls)}
		}
	}
	if sc.admit {
		elapsed := t1.Sub(t0)
		lim := sc.limit()
		bound := lim.Capacity() + int64(float64(lim.Rate)*float64(elapsed)/float64(lim.Per))
		admitted := int64(warm.admitted[0] + d.admitted[0])
		s.Admission = &abuseCheck{RedisSeconds: elapsed.Seconds(), Admitted: admitted, Bound: bound, Over: max(admitted-bound, 0)}
	}
	return s, nil
}

// isScriptCall reports whether a commandstats name is a script call: FCALL
// (the library's decisions on Redis 7), EVALSHA or EVAL.
func isScriptCall(name string) bool {
	return name == "fcall" || name == "evalsha" || name == "eval"
}

// nodesCPU is each node's used_cpu_sys + used_cpu_user.
func nodesCPU(ctx context.Context, nodes []*redis.Client) ([]float64, error) {
	out := make([]float64, len(nodes))
	for i, n := range nodes {
		v, err := cpuSeconds(ctx, n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// selfCPU is this process's user + system CPU time, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
