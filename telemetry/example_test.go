package telemetry_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	slogmulti "github.com/samber/slog-multi"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
)

// Route blocked decisions to one handler and backend failures to another,
// with slog-multi's Router; allowed decisions (Debug) go nowhere here.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// Drop the time so that the output is stable.
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == "duration" {
			return slog.Attr{}
		}
		return a
	}
	blocks := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime})
	errs := slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	logger := slog.New(slogmulti.Router().
		Add(blocks, slogmulti.LevelIs(slog.LevelInfo)).
		Add(errs, slogmulti.LevelIs(slog.LevelWarn, slog.LevelError)).
		Handler())

	limiter, err := ratelimit.New(rdb, ratelimit.PerSecond(1), ratelimit.WithNamespace("api"),
		ratelimit.WithSubscribers(telemetry.Slog(logger)))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	_, _ = limiter.Allow(ctx, "user:1")
	_, _ = limiter.Allow(ctx, "user:1")
	// Output:
	// level=INFO msg="ratelimit blocked" namespace=api algorithm=token_bucket key=api:token_bucket:{abc3a47b8ad18b855c687d9ca2c6091ee7312db5563021942a57ada889c87b34} cost=1 allowed=false reason=quota remaining=0 retry_after=1s
}

// A slow sink goes behind Async: decisions never wait for it.
func ExampleAsync() {
	slow := telemetry.Slog(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	async := telemetry.Async(slow, 1024)
	defer async.Close(context.Background()) // delivers what is queued

	_ = ratelimit.WithSubscribers(async) // pass to ratelimit.New
	// Output:
}
