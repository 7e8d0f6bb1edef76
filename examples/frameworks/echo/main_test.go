package main

import (
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/fwtest"
)

// TestEcho drives the echo application through a real HTTP server: five
// requests pass with the RateLimit fields and the handler's body (read
// from c.Request().Context()), the sixth is a 429 with Retry-After and a
// single problem body (echo's error handler wrote nothing more), and
// /healthz stays outside the limit.
func TestEcho(t *testing.T) {
	fwtest.Both(t, func(t *testing.T, rdb *redis.Client, exact bool) {
		e, err := newEcho(rdb)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(e)
		defer srv.Close()
		fwtest.Check(t, srv.URL, fwtest.Limited{
			Path: "/api/hello", Free: "/healthz",
			Policy: "api", Burst: 5, Window: 60,
			Body: fwtest.Hello,
		}, exact)
	})
}
