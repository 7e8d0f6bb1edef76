package prom_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// Register the collector on your registry, subscribe it to a limiter, and
// serve the registry with OpenMetrics on, so that exemplars are exposed.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	metrics, err := prom.NewCollector()
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	_ = mux // http.ListenAndServe(":9090", mux)

	limiter, err := ratelimit.New(rdb, ratelimit.PerMinute(2), ratelimit.WithNamespace("api"),
		ratelimit.WithSubscribers(metrics))
	if err != nil {
		panic(err)
	}
	for range 3 {
		_, _ = limiter.Allow(context.Background(), "user:1")
	}

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != prom.DecisionsName {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			fmt.Println(strings.Join(labels, " "), m.GetCounter().GetValue())
		}
	}
	// Output:
	// algorithm=token_bucket decision=allowed namespace=api reason=quota 2
	// algorithm=token_bucket decision=blocked namespace=api reason=quota 1
}
