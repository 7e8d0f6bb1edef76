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

// advance moves the embedded Redis's clock (TIME) and its TTLs together.
func advance(mr *miniredis.Miniredis, d time.Duration) {
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	now, err := rdb.Time(context.Background()).Result()
	if err != nil {
		panic(err)
	}
	mr.SetTime(now.Add(d))
	mr.FastForward(d)
}

func ExampleWithAlgorithm_fixedWindow() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// 3 a minute, per calendar minute (windows are aligned to the Unix
	// epoch, so every instance and identity shares the same edges).
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(3), ratelimit.WithAlgorithm(ratelimit.FixedWindow))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	advance(mr, 45*time.Second)
	for range 4 {
		res, _ := limiter.Allow(ctx, "user:1")
		fmt.Println(res.Allowed, res.Remaining, res.RetryAfter)
	}
	advance(mr, 15*time.Second) // the next minute starts empty
	res, _ := limiter.Allow(ctx, "user:1")
	fmt.Println(res.Allowed, res.Remaining)
	// Output:
	// true 2 0s
	// true 1 0s
	// true 0 0s
	// false 0 15s
	// true 2
}

func ExampleWithAlgorithm_slidingWindow() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(10), ratelimit.WithAlgorithm(ratelimit.SlidingWindow))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	res, _ := limiter.AllowN(ctx, "user:1", 10)
	fmt.Println("spent 10:", res.Allowed)

	// 30 s into the next minute, the previous minute's 10 still weigh 5.
	advance(mr, 90*time.Second)
	res, _ = limiter.AllowN(ctx, "user:1", 6)
	fmt.Println("6 more:", res.Allowed, "retry after", res.RetryAfter)
	res, _ = limiter.AllowN(ctx, "user:1", 5)
	fmt.Println("5 more:", res.Allowed, "remaining", res.Remaining)
	// Output:
	// spent 10: true
	// 6 more: false retry after 6s
	// 5 more: true remaining 0
}

func ExampleWithAlgorithm_slidingLog() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// Exactly 2 in any 10 seconds: no edge bursts, one log entry per call.
	limiter, err := ratelimit.New(rdb, ratelimit.Limit{Rate: 2, Per: 10 * time.Second},
		ratelimit.WithAlgorithm(ratelimit.SlidingLog))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, wait := range []time.Duration{0, 4 * time.Second, 4 * time.Second, 2 * time.Second} {
		advance(mr, wait)
		res, _ := limiter.Allow(ctx, "user:1")
		fmt.Printf("+%v: allowed=%v retry=%v\n", wait, res.Allowed, res.RetryAfter)
	}
	// A Burst other than the quota is refused, not ignored.
	_, err = ratelimit.New(rdb, ratelimit.PerMinute(10).WithBurst(50), ratelimit.WithAlgorithm(ratelimit.SlidingLog))
	fmt.Println(errors.Is(err, ratelimit.ErrInvalidLimit))
	// Output:
	// +0s: allowed=true retry=0s
	// +4s: allowed=true retry=0s
	// +4s: allowed=false retry=2s
	// +2s: allowed=true retry=0s
	// true
}

func ExampleNewConcurrency() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// At most 8 GPU memory units in flight per tenant; a crashed worker's
	// lease frees its units after 2 minutes at the latest.
	gpus, err := ratelimit.NewConcurrency(rdb, 8, ratelimit.WithLeaseTTL(2*time.Minute))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	big, res, _ := gpus.Acquire(ctx, "tenant:acme", 6)
	fmt.Println("6 units:", res.Allowed, "free:", res.Remaining)
	_, res, _ = gpus.Acquire(ctx, "tenant:acme", 4)
	fmt.Println("4 more:", res.Allowed, "retry within:", res.RetryAfter)

	_ = big.Release(ctx)
	_ = big.Release(ctx) // idempotent
	small, res, _ := gpus.Acquire(ctx, "tenant:acme", 4)
	fmt.Println("after release:", res.Allowed, "free:", res.Remaining)

	// The holder of small crashes; two minutes later its units are back.
	_ = small
	advance(mr, 2*time.Minute)
	_, res, _ = gpus.Acquire(ctx, "tenant:acme", 8)
	fmt.Println("after expiry:", res.Allowed)
	// Output:
	// 6 units: true free: 2
	// 4 more: false retry within: 2m0s
	// after release: true free: 4
	// after expiry: true
}

func ExampleLease_KeepAlive() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	jobs, err := ratelimit.NewConcurrency(rdb, 1, ratelimit.WithLeaseTTL(time.Minute))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	lease, res, err := jobs.Acquire(ctx, "tenant:acme", 1)
	if err != nil || !res.Allowed {
		return // busy, or Redis down
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()

	// Extend the lease every 20 s while the job runs; jobCtx ends, with
	// cause ErrLeaseLost, if the lease is lost anyway.
	jobCtx, stop := lease.KeepAlive(ctx, 20*time.Second)
	defer stop()
	fmt.Println("running:", jobCtx.Err() == nil)
	// Output:
	// running: true
}

func ExampleNewMulti() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// 2 requests a second and 5 a day, all or nothing: a request denied by
	// the per-second quota does not eat into the daily one.
	limiter, err := ratelimit.NewMulti(rdb, []ratelimit.Quota{
		{Name: "per_second", Limit: ratelimit.PerSecond(2)},
		{Name: "daily", Limit: ratelimit.PerDay(5), Algorithm: ratelimit.FixedWindow},
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for range 3 {
		res, _ := limiter.Allow(ctx, "key:42")
		fmt.Printf("allowed=%v quota=%s remaining=%d daily left=%d\n",
			res.Allowed, res.Quota, res.Remaining, res.Quotas[1].Remaining)
	}
	// Output:
	// allowed=true quota=per_second remaining=1 daily left=4
	// allowed=true quota=per_second remaining=0 daily left=3
	// allowed=false quota=per_second remaining=0 daily left=3
}

func ExampleMultiLimiter_AllowCosts() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// An LLM API: 60 requests and 10,000 tokens a minute per key.
	limiter, err := ratelimit.NewMulti(rdb, []ratelimit.Quota{
		{Name: "requests", Limit: ratelimit.PerMinute(60)},
		{Name: "tokens", Limit: ratelimit.PerMinute(10000)},
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	// Reserve the request's max_tokens...
	res, _ := limiter.AllowCosts(ctx, "key:42", 1, 4000)
	fmt.Println("reserved:", res.Allowed, "tokens left:", res.Quotas[1].Remaining)
	// ...and settle with the tokens it used.
	used := int64(1500)
	res, _ = limiter.Refund(ctx, "key:42", res, 0, 4000-used)
	fmt.Println("settled, tokens left:", res.Quotas[1].Remaining)
	// Output:
	// reserved: true tokens left: 6000
	// settled, tokens left: 8500
}

func ExampleLimiter_Refund() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	llm, err := ratelimit.New(rdb, ratelimit.PerMinute(10000), ratelimit.WithNamespace("llm"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	maxTokens, used := int64(4000), int64(900)
	spent, _ := llm.AllowN(ctx, "key:42", maxTokens) // reserve the most it may use
	fmt.Println("reserved, remaining:", spent.Remaining)
	res, _ := llm.Refund(ctx, "key:42", spent, maxTokens-used) // settle what that call spent
	fmt.Println("settled, remaining:", res.Remaining)
	res, _ = llm.Refund(ctx, "key:42", spent, 10000) // never above the burst
	fmt.Println("over-refunded, remaining:", res.Remaining)
	_, _ = llm.AllowN(ctx, "key:42", 10000) // empties the bucket
	denied, _ := llm.AllowN(ctx, "key:42", 1)
	res, _ = llm.Refund(ctx, "key:42", denied, 1) // a denial spent nothing: nothing to give back
	fmt.Println("refund of a denial:", res == ratelimit.Result{})
	// Output:
	// reserved, remaining: 6000
	// settled, remaining: 9100
	// over-refunded, remaining: 10000
	// refund of a denial: true
}

// A RefundSubscriber sees what every Refund gave back; here Hooks counts
// it, as the prom subscriber's ratelimit_cost_refunded_total does.
func ExampleRefundSubscriber() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	var refunded int64
	hooks := ratelimit.Hooks{OnRefund: func(_ context.Context, r ratelimit.RefundEvent) {
		if r.Err == nil {
			refunded += r.Amount
		}
	}}
	llm, err := ratelimit.New(rdb, ratelimit.PerMinute(10000), ratelimit.WithNamespace("llm"), ratelimit.WithSubscribers(hooks))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, used := range []int64{900, 1500} {
		res, _ := llm.AllowN(ctx, "key:42", 2000)
		_, _ = llm.Refund(ctx, "key:42", res, 2000-used) // nothing unless the call spent
	}
	fmt.Println("refunded:", refunded)
	// Output:
	// refunded: 1600
}

func ExampleLimiter_WithLimit() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// Requests per calendar minute, by plan.
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(2), ratelimit.WithAlgorithm(ratelimit.FixedWindow))
	if err != nil {
		panic(err)
	}
	plans := map[string]ratelimit.Limit{"free": ratelimit.PerMinute(2), "pro": ratelimit.PerMinute(100)}
	ctx := context.Background()
	for _, plan := range []string{"free", "free", "free", "pro"} {
		// No Redis call; the identity's state is shared by every plan, so
		// an upgrade counts what was already spent this minute.
		tier, err := limiter.WithLimit(plans[plan])
		if err != nil {
			panic(err)
		}
		res, _ := tier.Allow(ctx, "user:7")
		fmt.Println(plan, res.Allowed, res.Remaining)
	}
	// Output:
	// free true 1
	// free true 0
	// free false 0
	// pro true 97
}

func ExampleWithShadow() {
	mr, rdb := embeddedRedis()
	defer mr.Close()
	defer rdb.Close()

	// Roll out a new limit: decide and publish, never block yet.
	wouldBlock := 0
	watch := ratelimit.SubscriberFunc(func(_ context.Context, e ratelimit.Event) {
		if e.Result.Reason == ratelimit.ReasonShadow {
			wouldBlock++
		}
	})
	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(2), ratelimit.WithShadow(), ratelimit.WithSubscribers(watch))
	if err != nil {
		panic(err)
	}
	for range 3 {
		res, _ := limiter.Allow(context.Background(), "user:1")
		fmt.Println(res.Allowed, res.Reason, res.RetryAfter)
	}
	fmt.Println("would have blocked:", wouldBlock)
	// Output:
	// true quota 0s
	// true quota 0s
	// true shadow 30s
	// would have blocked: 1
}
