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

func ExampleWithBreaker() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	// No retries: a refused connection fails at once, as a connection
	// error (see Failure modes in README).
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()

	br, err := ratelimit.NewBreaker(ratelimit.BreakerSettings{Failures: 2, CoolDown: time.Minute})
	if err != nil {
		panic(err)
	}
	hooks := ratelimit.Hooks{OnBreaker: func(_ context.Context, c ratelimit.BreakerChange) {
		fmt.Println("breaker:", c.From, "->", c.To)
	}}
	limiter, err := ratelimit.New(rdb, ratelimit.PerSecond(10), ratelimit.WithBreaker(br), ratelimit.WithSubscribers(hooks))
	if err != nil {
		panic(err)
	}
	mr.Close() // Redis goes away

	ctx := context.Background()
	for i := range 3 {
		res, err := limiter.Allow(ctx, "user:1")
		var be *ratelimit.BackendError
		errors.As(err, &be)
		fmt.Println("call", i+1, res.Reason, be.Type, errors.Is(err, ratelimit.ErrCircuitOpen))
	}
	// Output:
	// call 1 fail_open connection false
	// breaker: closed -> open
	// call 2 fail_open connection false
	// call 3 fail_open circuit_open true
}
