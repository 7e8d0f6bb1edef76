package httplimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

// A whole mux behind one limit per client address: two requests a minute,
// then 429 with Retry-After.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) // a still clock, for stable output
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(2), ratelimit.WithNamespace("api"))
	if err != nil {
		panic(err)
	}
	mw, err := httplimit.New(lim) // identity: the socket address; draft-11 headers
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		d, _ := httplimit.FromContext(r.Context())
		fmt.Fprintf(w, "hello, %d left", d.Result.Remaining)
	})
	h := mw.Handler(mux)

	for range 3 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/hello", nil))
		fmt.Printf("%d %s %s Retry-After=%s\n", w.Code, w.Header().Get("RateLimit-Policy"), w.Header().Get("RateLimit"), w.Header().Get("Retry-After"))
	}
	// Output:
	// 200 "api";q=2;w=60 "api";r=1;t=30 Retry-After=
	// 200 "api";q=2;w=60 "api";r=0;t=60 Retry-After=
	// 429 "api";q=2;w=60 "api";r=0;t=30 Retry-After=30
}

// Behind a load balancer in 10.0.0.0/8 the client is the rightmost
// X-Forwarded-For address outside that range; what the client wrote to the
// left of it does not count.
func ExampleClientIP() {
	ip := httplimit.MustClientIP(httplimit.TrustProxies("10.0.0.0/8"))

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.7:41000" // the load balancer
	r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.3")
	fmt.Println(ip.Key(r))

	r.RemoteAddr = "198.51.100.4:5000" // a direct connection: the header is ignored
	fmt.Println(ip.Key(r))

	r.RemoteAddr = "[2001:db8:aa:bb:1:2:3:4]:443" // IPv6 clients are grouped by /64
	fmt.Println(ip.Key(r))
	// Output:
	// ip:203.0.113.9/32 <nil>
	// ip:198.51.100.4/32 <nil>
	// ip:2001:db8:aa:bb::/64 <nil>
}

// An LLM-style endpoint: a per-route limit on tokens per API key, with the
// cost taken from the request.
func ExampleMiddleware_HandlerFunc() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	tokens, _ := ratelimit.New(rdb, ratelimit.PerMinute(1000), ratelimit.WithNamespace("llm"))
	gen := httplimit.Must(tokens,
		httplimit.WithKey(httplimit.KeyByHeader("X-API-Key")),
		httplimit.WithCost(httplimit.CostByQuery("tokens", 1)),
		httplimit.WithHeaderStyle(httplimit.StyleLegacy))
	h := gen.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "generated") })

	for _, n := range []int{600, 500, 400} {
		r := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/generate?tokens=%d", n), nil)
		r.Header.Set("X-API-Key", "team-a")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(n, w.Code, "remaining", w.Header().Get("RateLimit-Remaining"))
	}
	// Output:
	// 600 200 remaining 400
	// 500 429 remaining 400
	// 400 200 remaining 0
}
