// Command ratelimitd is a rate limit service: Envoy's rate limit service
// (envoy.service.ratelimit.v3.RateLimitService over gRPC) and an HTTP API
// (POST /json, the REST calls under /v1/), configured by
// envoyproxy/ratelimit's YAML files, deciding on Redis with the
// ratelimit-go library, with its telemetry: Prometheus metrics on /metrics,
// OpenTelemetry spans, structured logs.
//
//	go run .                                   # embedded Redis (miniredis), sample configuration
//	go run . -config /etc/ratelimit/config -redis redis://redis:6379/0
//	REDIS_URL=redis://redis:6379/0 go run . -config ./config
//
// Unlike envoyproxy/ratelimit, all the descriptors of one request are
// decided at once, all or nothing, in one Redis script: a request one
// descriptor denies spends nothing on the others. See README.md.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

//go:embed config/example.yaml
var exampleConfig []byte

// options is everything the flags and the environment decide.
type options struct {
	configPath     string // "": the embedded sample
	httpAddr       string
	grpcAddr       string
	redisURL       string // "": an embedded miniredis
	cluster        bool
	logLevel       slog.Level
	redisTimeout   time.Duration
	breaker        bool
	headers        HeaderStyle
	reloadInterval time.Duration
	drain          time.Duration
	identityKey    []byte
}

func parseFlags(args []string, getenv func(string) string, errOut io.Writer) (options, error) {
	fs := flag.NewFlagSet("ratelimitd", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var (
		o        options
		logLevel string
		headers  string
	)
	fs.StringVar(&o.configPath, "config", "", "configuration: a YAML file, or a directory of *.yaml/*.yml files (default: the embedded sample)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "HTTP listen address: /json, /v1/*, /metrics, /healthz, /readyz")
	fs.StringVar(&o.grpcAddr, "grpc", "127.0.0.1:8081", "gRPC listen address: Envoy's RateLimitService, health, reflection")
	fs.StringVar(&o.redisURL, "redis", getenv("REDIS_URL"), "Redis URL, redis:// or rediss:// (default $REDIS_URL; empty: an embedded miniredis)")
	fs.BoolVar(&o.cluster, "redis-cluster", getenv("REDIS_CLUSTER") == "1", "the -redis URL is a node of a Redis Cluster (default: $REDIS_CLUSTER=1)")
	fs.StringVar(&logLevel, "log-level", "info", "slog level on stderr: debug (every decision), info (denials, reloads), warn, error")
	fs.DurationVar(&o.redisTimeout, "redis-timeout", 50*time.Millisecond, "the longest a decision waits for Redis before the domain's fail mode decides (a domain's timeout: overrides it)")
	fs.BoolVar(&o.breaker, "breaker", true, "a circuit breaker in front of Redis: 5 failures in a row skip it for 1s cool-downs")
	fs.StringVar(&headers, "headers", "draft11", "response headers for Envoy and HTTP callers: draft11 (RateLimit, RateLimit-Policy), x-ratelimit (the legacy trio) or none")
	fs.DurationVar(&o.reloadInterval, "reload-interval", 2*time.Second, "how often to look for a changed configuration (0: only on SIGHUP)")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "on SIGTERM, how long requests in flight may take to finish")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := o.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return options{}, fmt.Errorf("-log-level: %w", err)
	}
	var err error
	if o.headers, err = parseHeaderStyle(headers); err != nil {
		return options{}, err
	}
	if o.redisTimeout <= 0 || o.reloadInterval < 0 || o.drain < 0 {
		return options{}, errors.New("-redis-timeout must be > 0, -reload-interval and -drain >= 0")
	}
	if k := getenv("RATELIMIT_IDENTITY_KEY"); k != "" {
		if len(k) < 16 {
			return options{}, errors.New("RATELIMIT_IDENTITY_KEY must be at least 16 bytes")
		}
		o.identityKey = []byte(k)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratelimitd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, o, hup, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ratelimitd:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, o options, hup <-chan os.Signal, out, logOut io.Writer) error {
	s, err := start(ctx, o, hup, nil, out, logOut)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-s.serveErr:
		_ = s.shutdown(context.Background(), 0)
		return err
	}
	fmt.Fprintln(out, "ratelimitd: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.drain+5*time.Second)
	defer cancel()
	return s.shutdown(sctx, o.drain)
}
