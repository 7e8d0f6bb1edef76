// Command bench measures this library beside its peers on one Redis:
// ratelimit-go's token bucket (with and without pipelining, with and
// without its telemetry subscribers), its other algorithms, and under abuse
// with and without its deny cache; go-redis/redis_rate v10, ulule/limiter
// v3 and throttled v2; and raw EVALSHA and INCR as the ceiling, at several
// concurrencies, on one hot key and on 10,000 keys. A section of its own
// measures one hot identity on Redis Clusters it starts (3 masters and 1)
// with ratelimit.WithShards (cases shards-*; shards.go), after the rest.
//
// Every case runs in two client setups: a fresh client per cell sized to
// its callers with ContextTimeoutEnabled (no case waits on the pool), and
// one client with go-redis's default options shared by every case of the
// run, as in a program that already has a client (issue 13: the library's
// lead must hold in the setup users run, not only in a favourable one).
//
// It starts a redis-server of its own on a free loopback port (or uses the
// one given with -redis), runs every cell (setup × case × keys ×
// concurrency) for -duration, round after round with the cells interleaved,
// and writes the medians over the rounds to BENCHMARKS.md and
// benchmarks.svg in -out (and every sample to -json), and prints the
// targets and the README's headline figures.
//
//	cd bench && go run .                 # the full run (minutes), writes ../BENCHMARKS.md
//	cd bench && go run . -smoke -out /tmp/bench   # every cell for a moment (seconds)
//	cd bench && go run . -cases shards -out /tmp/bench -shards-out SHARDS-SECTION.md   # the cluster section alone
//
// It lives in a module of its own, so that the peer libraries never enter
// the library's go.mod.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type config struct {
	redisAddr string
	dur, warm time.Duration
	rounds    int
	concs     []int
	keyspaces []int
	setups    []string
	cases     *regexp.Regexp
	out       string
	smoke     bool
	maxCalls  int
	cpuprof   string
	jsonOut   string
	render    string
	headline  string
	shardsOut string
	args      []string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad list %q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		c                   config
		concs, keys, casesF string
		setupsF             string
	)
	fs.StringVar(&c.redisAddr, "redis", "", "host:port of a Redis to use (default: start a redis-server on a free loopback port); its data is left alone")
	fs.DurationVar(&c.dur, "duration", 500*time.Millisecond, "measured time per cell and round")
	fs.DurationVar(&c.warm, "warmup", 100*time.Millisecond, "unmeasured warm-up per cell and round")
	fs.IntVar(&c.rounds, "rounds", 10, "rounds; each cell's figures are the medians over the rounds")
	fs.StringVar(&concs, "conc", "1,16,64,256", "concurrencies (goroutines calling at once)")
	fs.StringVar(&keys, "keys", "10000,1", "key spaces: identities the calls rotate over (1 = one hot key)")
	fs.StringVar(&casesF, "cases", ".", "regexp selecting cases by name")
	fs.StringVar(&setupsF, "setups", strings.Join(setupNames, ","), "client setups: per-case (a fresh client per cell, PoolSize = concurrency, ContextTimeoutEnabled) "+
		"and shared (one client with go-redis's default options for every case of the run)")
	fs.StringVar(&c.out, "out", "..", "directory to write BENCHMARKS.md and benchmarks.svg to")
	fs.StringVar(&c.jsonOut, "json", "", "also write every sample and the summary as JSON to this file")
	fs.StringVar(&c.headline, "headline", "", "also write the README's headline figures (Markdown bullets) to this file")
	fs.StringVar(&c.shardsOut, "shards-out", "", "also write the section \"Hot keys on Redis Cluster: sharded buckets\" alone (Markdown, with its command) to this file")
	fs.StringVar(&c.render, "render", "", "measure nothing: write the report again from the -json file of an earlier run (give the same flags)")
	fs.BoolVar(&c.smoke, "smoke", false, "run every cell for a moment, one round (seconds in total; for CI, no figure is meaningful)")
	fs.IntVar(&c.maxCalls, "max-calls", 10_000_000, "bound on the calls of one goroutine in one cell")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var err error
	if c.concs, err = intList(concs); err != nil {
		return c, err
	}
	if c.keyspaces, err = intList(keys); err != nil {
		return c, err
	}
	for _, f := range strings.Split(setupsF, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(setupNames, f) {
			return c, fmt.Errorf("-setups: unknown setup %q (want %s)", f, strings.Join(setupNames, ", "))
		}
		if !slices.Contains(c.setups, f) {
			c.setups = append(c.setups, f)
		}
	}
	if c.cases, err = regexp.Compile(casesF); err != nil {
		return c, fmt.Errorf("-cases: %w", err)
	}
	if c.smoke {
		c.dur, c.warm, c.rounds = 30*time.Millisecond, 10*time.Millisecond, 1
	}
	if c.rounds < 1 || c.dur <= 0 || c.warm < 0 {
		return c, fmt.Errorf("-rounds must be >= 1 and -duration > 0")
	}
	// The command to reproduce: every flag that changes what is measured
	// (not where the results go).
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "out", "json", "cpuprofile", "render", "headline", "shards-out":
		default:
			c.args = append(c.args, "-"+f.Name+"="+f.Value.String())
		}
	})
	return c, nil
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	var cases []benchCase
	for _, bc := range allCases() {
		if cfg.cases.MatchString(bc.Name) {
			cases = append(cases, bc)
		}
	}
	scases := selectShardCases(cfg)
	if len(cases) == 0 && len(scases) == 0 {
		return fmt.Errorf("-cases %q selects no case", cfg.cases)
	}

	if cfg.render != "" {
		return render(cfg, cases, scases)
	}

	srv := &server{addr: cfg.redisAddr}
	if cfg.redisAddr == "" {
		if srv, err = startServer(); err != nil {
			return err
		}
	}
	defer srv.stop()
	admin := redis.NewClient(&redis.Options{Addr: srv.addr})
	defer admin.Close()
	if err := admin.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", srv.addr, err)
	}
	env, err := environment(ctx, admin)
	if err != nil {
		return err
	}

	if cfg.cpuprof != "" {
		f, err := os.Create(cfg.cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// The shared setup's client: go-redis's defaults (PoolSize 10 per
	// GOMAXPROCS, no ContextTimeoutEnabled), made once for the whole run.
	sharedClient := redis.NewClient(&redis.Options{Addr: srv.addr})
	defer sharedClient.Close()
	env.SharedPoolSize = sharedClient.Options().PoolSize
	r := &runner{addr: srv.addr, admin: admin, shared: sharedClient, flush: srv.owned, dur: cfg.dur, warm: cfg.warm, maxCalls: cfg.maxCalls}
	env.start(ctx, admin)
	samples := map[cell][]sample{}
	total := cfg.rounds * len(cellsOf(cfg, cases))
	done := 0
	began := time.Now()
	for round := range cfg.rounds {
		for _, nk := range cfg.keyspaces {
			for _, conc := range cfg.concs {
				// Interleave: every case in every setup runs once per
				// (keys, conc) per round, starting from a different one
				// each round, so that the two cells of a ratio ran
				// seconds apart.
				var todo []cell
				for _, c := range cellsOf(cfg, cases) {
					if c.Keys == nk && c.Conc == conc {
						todo = append(todo, c)
					}
				}
				for i := range todo {
					c := todo[(i+round)%len(todo)]
					bc := caseNamed(cases, c.Case)
					if err := ctx.Err(); err != nil {
						return err
					}
					s, err := r.run(ctx, bc, c.Setup, nk, conc, round)
					if err != nil {
						return err
					}
					samples[c] = append(samples[c], s)
					done++
					fmt.Fprintf(os.Stderr, "[%d/%d] round %d %-8s keys %-5d conc %-3d %-36s %9.0f/s p50 %7.1fµs p99 %8.1fµs allocs %5.1f errors %d\n",
						done, total, round+1, c.Setup, nk, conc, bc.Name, s.PerSec, s.P50, s.P99, s.Allocs, s.Errors)
				}
			}
		}
	}
	// The sharded-buckets section, on Redis Clusters of its own.
	if err := runShards(ctx, cfg, scases, env, samples); err != nil {
		return err
	}
	total += cfg.rounds * len(shardCellsOf(cfg, scases))
	env.finish(ctx, admin, began)

	return write(cfg, cases, scases, env, samples, total, began)
}

// write summarizes samples and writes the report (and -json).
func write(cfg config, cases []benchCase, scases []shardCase, env *environ, samples map[cell][]sample, total int, began time.Time) error {
	var sums []summary
	for _, c := range append(cellsOf(cfg, cases), shardCellsOf(cfg, scases)...) {
		sums = append(sums, summarize(c, samples[c]))
	}
	rep := &report{cfg: cfg, env: env, cases: cases, scases: scases, sums: sums, samples: samples}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	md := filepath.Join(cfg.out, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte(rep.markdown()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "benchmarks.svg"), []byte(rep.svg()), 0o644); err != nil {
		return err
	}
	if cfg.shardsOut != "" {
		if err := os.WriteFile(cfg.shardsOut, []byte(rep.shardsSectionAlone()), 0o644); err != nil {
			return err
		}
	}
	if cfg.jsonOut != "" {
		raw, err := json.Marshal(saved{env, sums, flatSamples(samples)})
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonOut, raw, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%d cells in %v; other processes used %.2f of %d cores meanwhile)\n",
		md, total, env.Took.Round(time.Second), env.OtherCPU, env.CPUs)
	for _, line := range rep.targetLines() {
		fmt.Fprintln(os.Stderr, line)
	}
	head := rep.headline()
	fmt.Fprintln(os.Stderr, "headline figures for the README:")
	for _, l := range head {
		fmt.Fprintln(os.Stderr, "  - "+l)
	}
	if cfg.headline != "" {
		txt := "- " + strings.Join(head, "\n- ") + "\n"
		if err := os.WriteFile(cfg.headline, []byte(txt), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// saved is what -json writes and -render reads.
type saved struct {
	Env     *environ            `json:"environment"`
	Summary []summary           `json:"summary"`
	Samples map[string][]sample `json:"samples"`
}

// render writes the report again from the samples of an earlier -json, with
// the flags given now (which must describe that run: -conc, -keys, -rounds,
// -duration, -warmup, -cases).
func render(cfg config, cases []benchCase, scases []shardCase) error {
	raw, err := os.ReadFile(cfg.render)
	if err != nil {
		return err
	}
	var sv saved
	if err := json.Unmarshal(raw, &sv); err != nil {
		return fmt.Errorf("-render %s: %w", cfg.render, err)
	}
	samples := map[cell][]sample{}
	for k, ss := range sv.Samples {
		c, err := parseCell(k)
		if err != nil {
			return fmt.Errorf("-render: %w", err)
		}
		samples[c] = ss
	}
	cfg.jsonOut = ""
	return write(cfg, cases, scases, sv.Env, samples, (len(cellsOf(cfg, cases))+len(shardCellsOf(cfg, scases)))*cfg.rounds, sv.Env.Started)
}

func flatSamples(m map[cell][]sample) map[string][]sample {
	out := map[string][]sample{}
	for c, s := range m {
		out[c.String()] = s
	}
	return out
}

// String is the cell's key in -json: "case/setup=shared/keys=10000/conc=64".
func (c cell) String() string {
	return fmt.Sprintf("%s/setup=%s/keys=%d/conc=%d", c.Case, c.Setup, c.Keys, c.Conc)
}

// parseCell reads a cell's -json key. Keys without a setup are from runs
// before there were two; theirs was the per-case client.
func parseCell(k string) (cell, error) {
	c := cell{Setup: perCase}
	i := strings.Index(k, "/")
	if i < 0 {
		return c, fmt.Errorf("bad sample key %q", k)
	}
	c.Case, k = k[:i], k[i:]
	if rest, ok := strings.CutPrefix(k, "/setup="); ok {
		j := strings.Index(rest, "/")
		if j < 0 {
			return c, fmt.Errorf("bad sample key %q", k)
		}
		c.Setup, k = rest[:j], rest[j:]
	}
	if _, err := fmt.Sscanf(k, "/keys=%d/conc=%d", &c.Keys, &c.Conc); err != nil {
		return c, fmt.Errorf("bad sample key %q: %w", k, err)
	}
	return c, nil
}

// cellsOf lists the run's cells in report order: setup, keys, concurrency,
// case.
func cellsOf(cfg config, cases []benchCase) []cell {
	var out []cell
	for _, setup := range cfg.setups {
		for _, nk := range cfg.keyspaces {
			for _, conc := range cfg.concs {
				for _, bc := range cases {
					if bc.runsIn(nk, conc) {
						out = append(out, cell{Case: bc.Name, Setup: setup, Keys: nk, Conc: conc})
					}
				}
			}
		}
	}
	return out
}

func caseNamed(cases []benchCase, name string) benchCase {
	for _, bc := range cases {
		if bc.Name == name {
			return bc
		}
	}
	panic("bench: no case " + name)
}
