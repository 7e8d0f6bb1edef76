package main

import (
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/fwtest"
)

// TestChi drives the router through a real HTTP server: five requests
// pass with the RateLimit fields and the handler's body, the sixth is a
// 429 with Retry-After, and /healthz stays outside the limit.
func TestChi(t *testing.T) {
	fwtest.Both(t, func(t *testing.T, rdb *redis.Client, exact bool) {
		h, err := newRouter(rdb)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		fwtest.Check(t, srv.URL, fwtest.Limited{
			Path: "/api/hello", Free: "/healthz",
			Policy: "api", Burst: 5, Window: 60,
			Body: fwtest.Hello,
		}, exact)
	})
}
