package e2e

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// dropperNamespace is the namespace of the dropper's limiter.
const dropperNamespace = "e2e_async"

// startDropper runs, in the test process, a small application of the
// library's own making ratelimit_events_dropped_total: the demo server
// subscribes synchronously and never drops an event. It is a limiter on the
// real Redis (at redisAddr, not behind the fault proxy) deciding ten times
// a second, with the Prometheus collector and a telemetry.Async around a
// subscriber that never returns (a hung log shipper), so that every event
// past the first is dropped and counted by the collector's Dropped
// subscriber. Its metrics are served on a loopback port, returned, for
// Prometheus to scrape. Everything stops when the test ends.
func startDropper(t *testing.T, redisAddr string) string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	metrics, err := prom.NewCollector()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	hung := make(chan struct{})
	stuck := ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) { <-hung })
	async := telemetry.Async(stuck, 1, telemetry.WithDropped(metrics.Dropped("stuck")))
	lim, err := ratelimit.New(rdb, ratelimit.PerSecond(100), ratelimit.WithNamespace(dropperNamespace),
		ratelimit.WithSubscribers(metrics, async))
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 36_000; i++ { // an hour at most
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = lim.Allow(ctx, "e2e-client")
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		close(hung) // the stuck subscriber returns; Close drains the queue
		closeCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		if err := async.Close(closeCtx); err != nil {
			t.Errorf("dropper: async close: %v", err)
		}
		if err := srv.Shutdown(closeCtx); err != nil {
			t.Errorf("dropper: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("dropper: serve: %v", err)
		}
		if err := rdb.Close(); err != nil {
			t.Errorf("dropper: redis close: %v", err)
		}
	})
	return ln.Addr().String()
}
