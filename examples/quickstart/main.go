// Command quickstart is the README's quick start: an HTTP API limited to 60
// requests a minute per client IP (bursts of 10), one limit shared by every
// instance on the same Redis, with Prometheus metrics and JSON logs.
//
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/quickstart
package main

import (
	"cmp"
	"context"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

func main() {
	api, closeRedis, err := newAPI(context.Background(), cmp.Or(os.Getenv("REDIS_URL"), "redis://localhost:6379/0"))
	if err != nil {
		log.Fatal(err) // e.g. "ratelimit: ... cannot connect to Redis: dial tcp ...: connection refused"
	}
	defer closeRedis()
	addr := cmp.Or(os.Getenv("ADDR"), "127.0.0.1:8080")
	log.Printf("try: curl -i http://%s/hello", addr)
	log.Fatal(http.ListenAndServe(addr, api))
}

func newAPI(ctx context.Context, redisURL string) (http.Handler, func() error, error) {
	metrics, err := prom.NewCollector() // ratelimit_decisions_total, ..._backend_duration_seconds, ...
	if err != nil {
		return nil, nil, err
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(metrics)
	// Denials and Redis errors as JSON on stderr, with the route that made them.
	logs := telemetry.Slog(slog.New(slog.NewJSONHandler(os.Stderr, nil)), telemetry.WithContextAttrs(httplimit.LogAttrs))

	limiter, err := ratelimit.NewFromURL(redisURL, ratelimit.PerMinute(60).WithBurst(10),
		ratelimit.WithNamespace("api"), ratelimit.WithSubscribers(metrics, logs))
	if err != nil {
		return nil, nil, err
	}
	if err := limiter.Check(ctx); err != nil { // fail at start, not at the first request
		limiter.Close()
		return nil, nil, err
	}
	limit := httplimit.Must(limiter) // by client IP; a 429 with RateLimit headers when denied
	mux := http.NewServeMux()
	mux.Handle("GET /hello", limit.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }))
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	return mux, limiter.Close, nil
}
