package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/fwtest"
)

// TestGorilla drives the router through a real HTTP server: requests for
// an unknown path under /api get 404 without rate-limit fields and cost
// nothing (gorilla runs middleware on a match only); then five requests
// pass with the RateLimit fields and the handler's body, the sixth is a
// 429 with Retry-After, and /healthz stays outside the limit.
func TestGorilla(t *testing.T) {
	fwtest.Both(t, func(t *testing.T, rdb *redis.Client, exact bool) {
		h, err := newRouter(rdb)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		for range 3 {
			resp, err := http.Get(srv.URL + "/api/nope")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if _, limited := fwtest.ParseFields(t, resp.Header); resp.StatusCode != http.StatusNotFound || limited {
				t.Fatalf("/api/nope: %d, rate-limit fields %v; want 404 without", resp.StatusCode, limited)
			}
		}
		fwtest.Check(t, srv.URL, fwtest.Limited{
			Path: "/api/hello", Free: "/healthz",
			Policy: "api", Burst: 5, Window: 60,
			Body: fwtest.Hello,
		}, exact)
	})
}
