// Command bench measures this library beside its peers on one Redis:
// ratelimit-go's token bucket (with and without pipelining, with and
// without its telemetry subscribers), go-redis/redis_rate v10, ulule/limiter
// v3 and throttled v2, and raw EVALSHA and INCR as the ceiling, at several
// concurrencies, on one hot key and on 10,000 keys.
//
// It starts a redis-server of its own on a free loopback port (or uses the
// one given with -redis), runs every cell (case × keys × concurrency) for
// -duration, round after round with the cases interleaved, and writes the
// medians over the rounds to BENCHMARKS.md and benchmarks.svg in -out (and
// every sample to -json).
//
//	cd bench && go run .                 # the full run (minutes), writes ../BENCHMARKS.md
//	cd bench && go run . -smoke -out /tmp/bench   # every cell for a moment (seconds)
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
	cases     *regexp.Regexp
	out       string
	smoke     bool
	maxCalls  int
	cpuprof   string
	jsonOut   string
	render    string
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
	)
	fs.StringVar(&c.redisAddr, "redis", "", "host:port of a Redis to use (default: start a redis-server on a free loopback port); its data is left alone")
	fs.DurationVar(&c.dur, "duration", 500*time.Millisecond, "measured time per cell and round")
	fs.DurationVar(&c.warm, "warmup", 100*time.Millisecond, "unmeasured warm-up per cell and round")
	fs.IntVar(&c.rounds, "rounds", 10, "rounds; each cell's figures are the medians over the rounds")
	fs.StringVar(&concs, "conc", "1,16,64,256", "concurrencies (goroutines calling at once)")
	fs.StringVar(&keys, "keys", "10000,1", "key spaces: identities the calls rotate over (1 = one hot key)")
	fs.StringVar(&casesF, "cases", ".", "regexp selecting cases by name")
	fs.StringVar(&c.out, "out", "..", "directory to write BENCHMARKS.md and benchmarks.svg to")
	fs.StringVar(&c.jsonOut, "json", "", "also write every sample and the summary as JSON to this file")
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
		case "out", "json", "cpuprofile", "render":
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
	if len(cases) == 0 {
		return fmt.Errorf("-cases %q selects no case", cfg.cases)
	}

	if cfg.render != "" {
		return render(cfg, cases)
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
	r := &runner{addr: srv.addr, admin: admin, flush: srv.owned, dur: cfg.dur, warm: cfg.warm, maxCalls: cfg.maxCalls}
	env.start(ctx, admin)
	samples := map[cell][]sample{}
	total := cfg.rounds * len(cfg.keyspaces) * len(cfg.concs) * len(cases)
	done := 0
	began := time.Now()
	for round := range cfg.rounds {
		for _, nk := range cfg.keyspaces {
			for _, conc := range cfg.concs {
				// Interleave: every case runs once per (keys, conc) per
				// round, starting from a different case each round.
				for i := range cases {
					bc := cases[(i+round)%len(cases)]
					if err := ctx.Err(); err != nil {
						return err
					}
					s, err := r.run(ctx, bc, nk, conc, round)
					if err != nil {
						return err
					}
					c := cell{Case: bc.Name, Keys: nk, Conc: conc}
					samples[c] = append(samples[c], s)
					done++
					fmt.Fprintf(os.Stderr, "[%d/%d] round %d keys %-5d conc %-3d %-28s %9.0f/s p50 %7.1fµs p99 %8.1fµs allocs %5.1f errors %d\n",
						done, total, round+1, nk, conc, bc.Name, s.PerSec, s.P50, s.P99, s.Allocs, s.Errors)
				}
			}
		}
	}
	env.finish(ctx, admin, began)

	return write(cfg, cases, env, samples, total, began)
}

// write summarizes samples and writes the report (and -json).
func write(cfg config, cases []benchCase, env *environ, samples map[cell][]sample, total int, began time.Time) error {
	var sums []summary
	for _, nk := range cfg.keyspaces {
		for _, conc := range cfg.concs {
			for _, bc := range cases {
				c := cell{Case: bc.Name, Keys: nk, Conc: conc}
				sums = append(sums, summarize(c, samples[c]))
			}
		}
	}
	rep := &report{cfg: cfg, env: env, cases: cases, sums: sums, samples: samples}
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
func render(cfg config, cases []benchCase) error {
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
		var c cell
		i := strings.Index(k, "/keys=")
		if i < 0 {
			return fmt.Errorf("-render: bad sample key %q", k)
		}
		c.Case = k[:i]
		if _, err := fmt.Sscanf(k[i:], "/keys=%d/conc=%d", &c.Keys, &c.Conc); err != nil {
			return fmt.Errorf("-render: bad sample key %q: %w", k, err)
		}
		samples[c] = ss
	}
	cfg.jsonOut = ""
	return write(cfg, cases, sv.Env, samples, len(sv.Samples)*cfg.rounds, sv.Env.Started)
}

func flatSamples(m map[cell][]sample) map[string][]sample {
	out := map[string][]sample{}
	for c, s := range m {
		out[fmt.Sprintf("%s/keys=%d/conc=%d", c.Case, c.Keys, c.Conc)] = s
	}
	return out
}
