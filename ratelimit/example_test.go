package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// embeddedRedis starts an in-process miniredis, so that the examples run
// offline. Use a real Redis in production.
func embeddedRedis() (*miniredis.Miniredis, *redis.Client) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) // a fixed clock: stable output
	return mr, redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
}

func ExampleLimiter_Allow() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// 100 a minute with bursts of 3 (the seed's RateLimiter(rate=100, per=60, burst=3)).
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(100).WithBurst(3), ratelimit.WithNamespace("myapp"))
	if err != nil {
		panic(err)
	}
	for range 4 {
		res, err := limiter.Allow(context.Background(), "user:123")
		if err != nil {
			fmt.Println("backend error:", err) // res is the fail strategy's decision
		}
		if res.Allowed {
			fmt.Println("allowed, remaining:", res.Remaining)
		} else {
			fmt.Println("blocked, retry after:", res.RetryAfter)
		}
	}
	// Output:
	// allowed, remaining: 2
	// allowed, remaining: 1
	// allowed, remaining: 0
	// blocked, retry after: 600ms
}

func ExampleLimiter_AllowN() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// An LLM endpoint: 10,000 tokens a minute per API key.
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(10000), ratelimit.WithNamespace("llm"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, tokens := range []int64{4000, 5000, 2000} {
		res, _ := limiter.AllowN(ctx, "key:42", tokens)
		fmt.Printf("%d tokens: allowed=%v remaining=%d retry=%v\n", tokens, res.Allowed, res.Remaining, res.RetryAfter)
	}
	// A cost that can never fit is bad input, not a denial.
	_, err = limiter.AllowN(ctx, "key:42", 20000)
	fmt.Println(errors.Is(err, ratelimit.ErrInvalidCost))
	// Output:
	// 4000 tokens: allowed=true remaining=6000 retry=0s
	// 5000 tokens: allowed=true remaining=1000 retry=0s
	// 2000 tokens: allowed=false remaining=1000 retry=6s
	// true
}

func ExampleLimiter_Wait() {
	mr, err := miniredis.Run() // real time here: Wait really waits
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	limiter, err := ratelimit.New(rdb, ratelimit.PerSecond(50).WithBurst(1))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := range 3 {
		// The 2nd and 3rd calls each wait about 20ms for a token.
		res, err := limiter.Wait(ctx, "batch-job", 1)
		fmt.Println(i, res.Allowed, err)
	}
	// Output:
	// 0 true <nil>
	// 1 true <nil>
	// 2 true <nil>
}

func ExampleHooks() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// The seed's on_allow / on_block / on_error callbacks.
	hooks := ratelimit.Hooks{
		OnAllow: func(_ context.Context, e ratelimit.Event) { fmt.Println("allow, remaining", e.Result.Remaining) },
		OnBlock: func(_ context.Context, e ratelimit.Event) { fmt.Println("block, retry after", e.Result.RetryAfter) },
		OnError: func(_ context.Context, e ratelimit.Event) { fmt.Println("backend error:", e.Err) },
	}
	limiter, err := ratelimit.New(rdb, ratelimit.PerSecond(1), ratelimit.WithSubscribers(hooks))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	_, _ = limiter.Allow(ctx, "user:1")
	_, _ = limiter.Allow(ctx, "user:1")
	// Output:
	// allow, remaining 0
	// block, retry after 1s
}

func ExampleWithFailStrategy() {
	mr, rdb := embeddedRedis()
	defer rdb.Close()

	closed, err := ratelimit.New(rdb, ratelimit.PerSecond(10), ratelimit.WithFailStrategy(ratelimit.FailClosed))
	if err != nil {
		panic(err)
	}
	open, err := ratelimit.New(rdb, ratelimit.PerSecond(10)) // FailOpen is the default
	if err != nil {
		panic(err)
	}
	mr.Close() // Redis goes away

	ctx := context.Background()
	res, err := open.Allow(ctx, "user:1")
	fmt.Println("open:", res.Allowed, res.Reason, errors.Is(err, ratelimit.ErrBackend))
	res, err = closed.Allow(ctx, "user:1")
	fmt.Println("closed:", res.Allowed, res.Reason, errors.Is(err, ratelimit.ErrBackend))
	// Output:
	// open: true fail_open true
	// closed: false fail_closed true
}

func ExampleLimit_String() {
	fmt.Println(ratelimit.PerMinute(100).WithBurst(200))
	fmt.Println(ratelimit.PerSecond(5))
	// Output:
	// 100/1m0s burst 200
	// 5/1s burst 5
}

func ExampleLimiter_BatchAllow() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// A gateway checks a batch of requests in one round trip.
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(60).WithBurst(2), ratelimit.WithNamespace("gw"))
	if err != nil {
		panic(err)
	}
	results, err := limiter.BatchAllow(context.Background(), []ratelimit.Request{
		{Identity: "key:alice", Cost: 1},
		{Identity: "key:bob", Cost: 2},
		{Identity: "key:alice", Cost: 1},
		{Identity: "key:alice", Cost: 1},
	})
	if err != nil {
		fmt.Println("error:", err) // bad input, or Redis failed for some requests
	}
	for i, res := range results {
		fmt.Printf("request %d: allowed=%v remaining=%d retry after %v\n", i, res.Allowed, res.Remaining, res.RetryAfter)
	}
	// Output:
	// request 0: allowed=true remaining=1 retry after 0s
	// request 1: allowed=true remaining=0 retry after 0s
	// request 2: allowed=true remaining=0 retry after 0s
	// request 3: allowed=false remaining=0 retry after 1s
}
