// Command httpserver is the ratelimit-go demo: an HTTP API limited per API
// key or client address on Redis, with the RateLimit headers, 429 problem
// bodies, structured logs and metrics, and an optional built-in load
// generator.
//
//	go run ./examples/httpserver                  # embedded Redis (miniredis) on 127.0.0.1:8080
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/httpserver
//	go run ./examples/httpserver -load            # plus a few clients and one abusive one
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 go run ./examples/httpserver   # traces to Jaeger
//
// Routes:
//
//	GET /api/hello              cost 1 on the "api" limit
//	GET /api/generate?tokens=N  cost 1 on "api" and N on the "llm" token limit
//	    &used=M                 the stand-in model used M of them: N-M are refunded
//	GET /metrics                Prometheus metrics (OpenMetrics, with exemplars)
//	GET /healthz                liveness, and whether Redis answers
//
// A client is its X-API-Key header when it sends one, else its address.
// Identities are hashed before they reach Redis: with HMAC-SHA-256 when
// RATELIMIT_IDENTITY_KEY gives the secret (at least 16 bytes, the same on
// every instance), else with SHA-256. Either way every instance on one
// Redis shares the limits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

// config is everything the flags and the environment decide.
type config struct {
	addr        string
	redisURL    string
	rate        int64
	per         time.Duration
	burst       int64
	fail        ratelimit.FailStrategy
	timeout     time.Duration
	breaker     bool
	style       httplimit.HeaderStyle
	trusted     []string
	logLevel    slog.Level
	load        bool
	loadFor     time.Duration
	loadMax     int
	identityKey []byte // nil: plain SHA-256
	otlp        bool   // an OTLP endpoint is configured: export traces
}

// parseFlags reads args (without the program name) and the environment.
func parseFlags(args []string, getenv func(string) string, errOut io.Writer) (config, error) {
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var (
		cfg      config
		fail     string
		style    string
		trusted  string
		logLevel string
	)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&cfg.redisURL, "redis", getenv("REDIS_URL"), "Redis URL (default $REDIS_URL; empty: an embedded miniredis)")
	fs.Int64Var(&cfg.rate, "rate", 60, "requests allowed per -per on /api/*, per client")
	fs.DurationVar(&cfg.per, "per", time.Minute, "the period of -rate")
	fs.Int64Var(&cfg.burst, "burst", 10, "most requests at once (0: -rate)")
	fs.StringVar(&fail, "fail", "open", "when Redis fails: open (allow) or closed (503)")
	fs.DurationVar(&cfg.timeout, "timeout", ratelimit.DefaultTimeout, "the longest a Redis call may take before -fail decides")
	fs.BoolVar(&cfg.breaker, "breaker", false, "put a circuit breaker in front of Redis (5 consecutive failures open it for 1s cool-downs; see ratelimit.WithBreaker)")
	fs.StringVar(&style, "header-style", "draft11", "rate-limit headers: draft11, legacy, x-ratelimit or none")
	fs.StringVar(&trusted, "trusted-proxies", "", "comma-separated proxy CIDRs whose X-Forwarded-For to trust (default: none, the socket address only)")
	fs.StringVar(&logLevel, "log-level", "info", "slog level on stderr: debug (every decision), info (blocks), warn, error")
	fs.BoolVar(&cfg.load, "load", false, "run a built-in traffic generator on loopback: 3 well-behaved clients, 1 abusive, 1 token-greedy")
	fs.DurationVar(&cfg.loadFor, "load-for", 10*time.Minute, "how long -load runs at most")
	fs.IntVar(&cfg.loadMax, "load-max", 50_000, "how many requests -load sends at most")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch fail {
	case "open":
		cfg.fail = ratelimit.FailOpen
	case "closed":
		cfg.fail = ratelimit.FailClosed
	default:
		return config{}, fmt.Errorf("-fail %q: want open or closed", fail)
	}
	var err error
	if cfg.style, err = httplimit.ParseHeaderStyle(style); err != nil {
		return config{}, err
	}
	if err := cfg.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return config{}, fmt.Errorf("-log-level: %w", err)
	}
	for s := range strings.SplitSeq(trusted, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.trusted = append(cfg.trusted, s)
		}
	}
	if k := getenv("RATELIMIT_IDENTITY_KEY"); k != "" {
		if len(k) < 16 {
			return config{}, errors.New("RATELIMIT_IDENTITY_KEY must be at least 16 bytes")
		}
		cfg.identityKey = []byte(k)
	}
	cfg.otlp = getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if cfg.loadFor <= 0 || cfg.loadMax <= 0 {
		return config{}, errors.New("-load-for and -load-max must be > 0")
	}
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends (SIGINT, SIGTERM), then shuts down in order:
// the load generator, the HTTP server (draining requests), telemetry, Redis.
func run(ctx context.Context, cfg config, out, logOut io.Writer) error {
	s, err := start(ctx, cfg, out, logOut)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nshutting down")
	case err := <-s.serveErr:
		_ = s.shutdown(context.Background())
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.shutdown(shutdownCtx)
}
