// Command loadproc is a load process for the multi-process tests: it hammers
// one identity from many goroutines through its own limiter and client, for a
// bounded time and count, and prints what it was told as JSON. The tests
// build it and run several at once against one Redis, as separate
// application instances would.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Report is what a load process prints on stdout.
type Report struct {
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	Errors  int64 `json:"errors"`
	// StartUS and EndUS are Redis TIME (µs) just before the first call and
	// just after the last, so the test can bound admissions on Redis's clock.
	StartUS int64 `json:"start_us"`
	EndUS   int64 `json:"end_us"`
}

func main() {
	addrs := flag.String("redis", "127.0.0.1:6379", "Redis address; several, comma-separated, mean a Cluster")
	id := flag.String("id", "hot-identity", "identity to spend on")
	namespace := flag.String("namespace", "load", "limiter namespace")
	goroutines := flag.Int("goroutines", 25, "concurrent callers")
	duration := flag.Duration("duration", time.Second, "how long to run")
	maxCalls := flag.Int("max-calls", 200000, "upper bound on calls per goroutine")
	rate := flag.Int64("rate", 500, "tokens per second")
	burst := flag.Int64("burst", 50, "bucket capacity")
	startAt := flag.Int64("start-at", 0, "unix ms to start at, so that processes start together (0: now)")
	flag.Parse()

	var client redis.UniversalClient
	if list := strings.Split(*addrs, ","); len(list) > 1 {
		client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: list, ContextTimeoutEnabled: true, PoolSize: *goroutines})
	} else {
		client = redis.NewClient(&redis.Options{Addr: list[0], ContextTimeoutEnabled: true, PoolSize: *goroutines})
	}
	defer client.Close()
	// FailClosed and a long timeout: an overloaded machine must show up as
	// errors, never as admissions the bound does not cover.
	lim, err := ratelimit.New(client, ratelimit.PerSecond(*rate).WithBurst(*burst),
		ratelimit.WithNamespace(*namespace), ratelimit.WithFailStrategy(ratelimit.FailClosed),
		ratelimit.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *startAt > 0 {
		time.Sleep(time.Until(time.UnixMilli(*startAt)))
	}
	var rep Report
	var allowed, denied, errs atomic.Int64
	ctx := context.Background()
	t0, err := client.Time(ctx).Result()
	if err != nil {
		fmt.Fprintln(os.Stderr, "TIME:", err)
		os.Exit(2)
	}
	stop := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for range *goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < *maxCalls && time.Now().Before(stop); n++ {
				res, err := lim.Allow(ctx, *id)
				switch {
				case err != nil:
					errs.Add(1)
				case res.Allowed:
					allowed.Add(1)
				default:
					denied.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t1, err := client.Time(ctx).Result()
	if err != nil {
		fmt.Fprintln(os.Stderr, "TIME:", err)
		os.Exit(2)
	}
	rep.StartUS, rep.EndUS = t0.UnixMicro(), t1.UnixMicro()
	rep.Allowed, rep.Denied, rep.Errors = allowed.Load(), denied.Load(), errs.Load()
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(1)
	}
}
