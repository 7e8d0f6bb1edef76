// Command basic shows the core API: a token bucket per identity, weighted
// costs, hooks and structured logs. It runs on an embedded Redis
// (miniredis) unless REDIS_URL points at a real one:
//
//	go run ./examples/basic
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/basic
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/url"
	"os"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	rdb, where, cleanup, err := connect()
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintln(out, "Redis:", where)

	// Blocks and backend errors as JSON on stderr; allowed decisions are at
	// Debug and stay quiet.
	logs := telemetry.Slog(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	hooks := ratelimit.Hooks{
		OnBlock: func(_ context.Context, e ratelimit.Event) {
			fmt.Fprintf(out, "  hook: blocked (cost %d), retry after %v\n", e.Cost, e.Result.RetryAfter)
		},
	}

	// The seed's RateLimiter(rate=100, per=60, burst=200, namespace="myapp"),
	// with a small burst so that the demo reaches it.
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(100).WithBurst(5),
		ratelimit.WithNamespace("myapp"),
		ratelimit.WithSubscribers(hooks, logs))
	if err != nil {
		return err
	}
	_ = limiter.Reset(ctx, "user:123") // a clean start on a shared Redis

	fmt.Fprintln(out, "Basic usage:", limiter.Limit())
	for i := 1; i <= 6; i++ {
		res, err := limiter.Allow(ctx, "user:123")
		if err != nil {
			fmt.Fprintln(out, "  backend error (decided by the fail strategy):", err)
		}
		if res.Allowed {
			fmt.Fprintf(out, "  request %d allowed, remaining %d\n", i, res.Remaining)
		} else {
			fmt.Fprintf(out, "  request %d blocked, retry after %v\n", i, res.RetryAfter)
		}
	}

	// Weighted cost: an LLM endpoint spending tokens, 10,000 a minute.
	llm, err := ratelimit.New(rdb, ratelimit.PerMinute(10000), ratelimit.WithNamespace("llm"),
		ratelimit.WithSubscribers(hooks, logs))
	if err != nil {
		return err
	}
	_ = llm.Reset(ctx, "api-key:42")
	fmt.Fprintln(out, "Weighted cost:", llm.Limit())
	for _, tokens := range []int64{3000, 6000, 2000} {
		res, err := llm.AllowN(ctx, "api-key:42", tokens)
		if err != nil {
			fmt.Fprintln(out, "  backend error:", err)
		}
		fmt.Fprintf(out, "  %5d tokens: allowed=%v remaining=%d\n", tokens, res.Allowed, res.Remaining)
	}

	key, _ := limiter.Key("user:123")
	fmt.Fprintln(out, "Redis key of user:123 (hashed, never the raw identity):", key)
	return nil
}

// connect returns a client for REDIS_URL, or for an embedded miniredis.
func connect() (redis.UniversalClient, string, func(), error) {
	if rawURL := os.Getenv("REDIS_URL"); rawURL != "" {
		opts, err := redis.ParseURL(rawURL)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL may hold a password: not repeated
			}
			return nil, "", nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opts.ContextTimeoutEnabled = true
		c := redis.NewClient(opts)
		return c, opts.Addr, func() { _ = c.Close() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, "", nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return c, "embedded miniredis (set REDIS_URL for a real Redis)", func() { _ = c.Close(); mr.Close() }, nil
}
