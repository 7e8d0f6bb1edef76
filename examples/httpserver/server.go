package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// llmLimit is the token limit of /api/generate, per client: 10,000 tokens a
// minute, at most 4,000 at once.
var llmLimit = ratelimit.PerMinute(10_000).WithBurst(4_000)

// defaultTokens is the cost of /api/generate without ?tokens=.
const defaultTokens = 100

// server is a started demo: the HTTP server, its limiters and what must be
// closed, in order, on shutdown.
type server struct {
	url      string
	srv      *http.Server
	serveErr chan error
	load     *loadGen // nil without -load
	closers  []func(context.Context) error
	out      io.Writer
}

// start connects to Redis, wires limiters, middleware and telemetry, starts
// listening and, with -load, the traffic generator.
func start(ctx context.Context, cfg config, out, logOut io.Writer) (s *server, err error) {
	s = &server{serveErr: make(chan error, 1), out: out}
	// The error returns below set s to nil: close what was opened through
	// a reference of its own.
	built := s
	defer func() {
		if err != nil {
			_ = built.closeAll(context.Background())
		}
	}()

	rdb, where, closeRedis, err := connect(cfg.redisURL)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, closeRedis)

	// Identities are hashed before they reach Redis: with an HMAC when
	// RATELIMIT_IDENTITY_KEY gives the secret (the same on every instance),
	// so that the keys cannot be reversed into client addresses or API
	// keys; else with plain SHA-256, which every instance on the same Redis
	// shares with no set-up. (A secret drawn at start would make each
	// instance count alone: N replicas would admit N times the limit.)
	keyNote := "plain SHA-256: set RATELIMIT_IDENTITY_KEY (16+ bytes, the same secret on every instance) for HMAC-SHA-256"
	var idOpts []ratelimit.Option
	if cfg.identityKey != nil {
		keyNote = "HMAC-SHA-256 with RATELIMIT_IDENTITY_KEY"
		idOpts = append(idOpts, ratelimit.WithIdentityKey(cfg.identityKey))
	}

	// Telemetry, wired as a user would: decisions as JSON logs on stderr,
	// Prometheus metrics on /metrics, and, when an OTLP endpoint is
	// configured, a span per decision under the request's server span.
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.logLevel}))
	metrics, err := prom.NewCollector()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry() // the library never touches the global one
	reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Each line says which policy and route it was for (httplimit.LogAttrs).
	subs := []ratelimit.Subscriber{telemetry.Slog(logger, telemetry.WithContextAttrs(httplimit.LogAttrs)), metrics}
	tp, stopTracing, tracesNote, err := setupTracing(ctx, cfg.otlp)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, stopTracing) // flushes queued spans
	if cfg.otlp {
		subs = append(subs, rlotel.NewSubscriber(rlotel.WithTracerProvider(tp)))
	}

	common := []ratelimit.Option{
		ratelimit.WithFailStrategy(cfg.fail),
		ratelimit.WithTimeout(cfg.timeout),
		ratelimit.WithSubscribers(subs...),
	}
	common = append(common, idOpts...)
	breakerNote := "off (-breaker turns it on)"
	if cfg.breaker {
		// One breaker for both limiters: they share one Redis, so when one
		// finds it down the other skips it too.
		br, err := ratelimit.NewBreaker(ratelimit.BreakerSettings{})
		if err != nil {
			return nil, err
		}
		common = append(common, ratelimit.WithBreaker(br))
		breakerNote = fmt.Sprintf("on: %d consecutive Redis failures skip Redis for %v, then one call probes", ratelimit.DefaultBreakerFailures, ratelimit.DefaultBreakerCoolDown)
	}
	apiLimit := ratelimit.Limit{Rate: cfg.rate, Per: cfg.per, Burst: cfg.burst}
	apiLim, err := ratelimit.New(rdb, apiLimit, append(common, ratelimit.WithNamespace("api"))...)
	if err != nil {
		return nil, fmt.Errorf("-rate/-per/-burst: %w", err)
	}
	llmLim, err := ratelimit.New(rdb, llmLimit, append(common, ratelimit.WithNamespace("llm"))...)
	if err != nil {
		return nil, err
	}
	// Say now, not at the first request, whether Redis can decide.
	redisNote := "ok (it answers, and has the decision script)"
	if err := apiLim.Check(ctx); err != nil {
		redisNote = fmt.Sprintf("NOT READY: %v; until it is, the fail strategy (%s) decides", err, cfg.fail)
	}

	// A client is its API key when it sends one, else its address (the
	// socket's, or the one trusted proxies report).
	var ipOpts []httplimit.IPOption
	if len(cfg.trusted) > 0 {
		ipOpts = append(ipOpts, httplimit.TrustProxies(cfg.trusted...))
	}
	clientIP, err := httplimit.NewClientIP(ipOpts...)
	if err != nil {
		return nil, fmt.Errorf("-trusted-proxies: %w", err)
	}
	key := httplimit.FirstOf(httplimit.KeyByHeader("X-API-Key"), clientIP.Key)

	// Every /api/ route is under the "api" limit; /api/generate is also
	// under the "llm" token limit. (Wrapping a whole mux, apiMW.Handler(mux),
	// works as well; routes registered on one mux give the server spans
	// their precise names.)
	apiMW, err := httplimit.New(apiLim, httplimit.WithKey(key), httplimit.WithHeaderStyle(cfg.style))
	if err != nil {
		return nil, err
	}
	genMW, err := httplimit.New(llmLim, httplimit.WithKey(key), httplimit.WithHeaderStyle(cfg.style),
		httplimit.WithCost(httplimit.CostByQuery("tokens", defaultTokens)))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/hello", apiMW.HandlerFunc(hello))
	mux.Handle("GET /api/generate", apiMW.Handler(genMW.HandlerFunc(generate(llmLim, key))))
	mux.HandleFunc("GET /healthz", health(rdb))
	// OpenMetrics is the text format that carries exemplars (trace ids).
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: reg}))
	mux.HandleFunc("GET /{$}", index)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, err
	}
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: traced(mux, tp), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()

	fmt.Fprintf(out, "ratelimit-go demo on %s (Redis: %s)\n", s.url, where)
	fmt.Fprintf(out, "  limit %q: %v per client (X-API-Key, else client IP); fail %s; headers %s\n", apiMW.Policy(), apiLimit, cfg.fail, cfg.style)
	fmt.Fprintf(out, "  limit %q: %v tokens per client on /api/generate\n", genMW.Policy(), llmLimit)
	fmt.Fprintf(out, "  redis: %s\n", redisNote)
	fmt.Fprintf(out, "  circuit breaker: %s\n", breakerNote)
	fmt.Fprintf(out, "  identities hashed: %s\n", keyNote)
	fmt.Fprintf(out, "  logs: JSON on stderr at level %s\n", cfg.logLevel)
	fmt.Fprintf(out, "  traces: %s\n", tracesNote)
	fmt.Fprintf(out, "\nTry:\n")
	fmt.Fprintf(out, "  curl -i %s/api/hello\n", s.url)
	fmt.Fprintf(out, "  for i in $(seq %d); do curl -s -o /dev/null -w '%%{http_code} ' %s/api/hello; done; echo\n", apiLimit.Capacity()+2, s.url)
	fmt.Fprintf(out, "  curl -i -H 'X-API-Key: alice' '%s/api/generate?tokens=1500'\n", s.url)
	fmt.Fprintf(out, "  curl -s %s/metrics | grep '^ratelimit_decisions_total'\n", s.url)
	fmt.Fprintf(out, "  curl -s %s/healthz\n", s.url)
	fmt.Fprintf(out, "Stop with Ctrl-C.\n")

	if cfg.load {
		s.load = startLoad(ctx, s.url, apiLimit, cfg.loadFor, cfg.loadMax)
		fmt.Fprintf(out, "\nload: %s\n", s.load.describe())
	}
	return s, nil
}

// shutdown stops the load generator, drains the HTTP server, then closes
// telemetry and Redis.
func (s *server) shutdown(ctx context.Context) error {
	if s.load != nil {
		fmt.Fprintf(s.out, "load: %s\n", s.load.stop())
	}
	var errs []error
	if s.srv != nil {
		errs = append(errs, s.srv.Shutdown(ctx))
	}
	errs = append(errs, s.closeAll(ctx))
	return errors.Join(errs...)
}

// closeAll runs the closers in reverse order of creation.
func (s *server) closeAll(ctx context.Context) error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i](ctx))
	}
	s.closers = nil
	return errors.Join(errs...)
}

// connect returns a client for url, or for an embedded miniredis when url
// is empty.
func connect(url string) (redis.UniversalClient, string, func(context.Context) error, error) {
	if url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, "", nil, fmt.Errorf("redis URL: %w", urlErr(err))
		}
		opts.ContextTimeoutEnabled = true
		c := redis.NewClient(opts)
		return c, opts.Addr, func(context.Context) error { return c.Close() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, "", nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return c, "embedded miniredis; set REDIS_URL or -redis for a real one", func(context.Context) error {
		err := c.Close()
		mr.Close()
		return err
	}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hello(w http.ResponseWriter, r *http.Request) {
	d, _ := httplimit.FromContext(r.Context())
	resp := map[string]any{"message": "hello", "policy": d.Policy, "remaining": d.Result.Remaining}
	if d.Result.Reason != ratelimit.ReasonQuota {
		resp["limiter"] = d.Result.Reason.String() // fail_open: Redis is down, not limited
	}
	writeJSON(w, http.StatusOK, resp)
}

// generate stands for an LLM endpoint. The middleware reserved ?tokens=
// (the request's max_tokens) on the "llm" limit before it runs; the stand-in
// model then "uses" ?used= of them (default: all), and the rest is given back
// with Refund: reserve the most, settle with what was used. A bad ?used=
// gives everything back and answers 400. Refund gives back only what the
// reservation took in Redis: under fail-open nothing was taken.
func generate(llm *ratelimit.Limiter, key httplimit.KeyFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, _ := httplimit.FromContext(r.Context())
		used, err := usedTokens(r, d.Cost)
		refund := d.Cost - used
		if err != nil {
			refund = d.Cost
		}
		remaining, refunded := d.Result.Remaining, int64(0)
		if refund > 0 && d.Result.Reason == ratelimit.ReasonQuota {
			// The same identity the middleware limited; a failed refund is
			// published (logs, metrics) and the tokens stay spent. The
			// client may be gone already: settle anyway.
			if id, kerr := key(r); kerr == nil {
				if res, rerr := llm.Refund(context.WithoutCancel(r.Context()), id, d.Result, refund); rerr == nil {
					remaining, refunded = res.Remaining, refund
				}
			}
		}
		if err != nil {
			httplimit.WriteProblem(w, httplimit.Problem{Type: "about:blank", Title: "Bad Request", Status: http.StatusBadRequest,
				Detail: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"tokens":           d.Cost,
			"text":             strings.TrimSpace(strings.Repeat("lorem ", int(min(used, 12)))) + " …",
			"refunded_tokens":  refunded,
			"remaining_tokens": remaining,
		})
	}
}

// usedTokens reads ?used=, the tokens the stand-in model used out of the
// reserved ones: reserved when absent.
func usedTokens(r *http.Request, reserved int64) (int64, error) {
	v := r.URL.Query().Get("used")
	if v == "" {
		return reserved, nil
	}
	used, err := strconv.ParseInt(v, 10, 64)
	if err != nil || used < 0 || used > reserved {
		return 0, fmt.Errorf("used=%q: want a whole number of tokens from 0 to the %d reserved", v, reserved)
	}
	return used, nil
}

func health(rdb redis.UniversalClient) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 200*time.Millisecond)
		defer cancel()
		status := "up"
		if err := rdb.Ping(ctx).Err(); err != nil {
			status = "down"
		}
		// Alive either way: with -fail open the API keeps serving.
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "redis": status})
	}
}

func index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ratelimit-go demo\n\n"+
		"GET /api/hello              cost 1 on the \"api\" limit\n"+
		"GET /api/generate?tokens=N  cost 1 on \"api\", N on \"llm\" (default "+strconv.Itoa(defaultTokens)+")\n"+
		"     &used=M                 the stand-in model used M of the N tokens: N-M are refunded\n"+
		"GET /metrics                Prometheus metrics (OpenMetrics)\n"+
		"GET /healthz                liveness and Redis status\n\n"+
		"Send X-API-Key: <anything> to be limited by key instead of address.\n")
}

// urlErr drops the URL from a URL parse error: it may hold a password.
func urlErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
