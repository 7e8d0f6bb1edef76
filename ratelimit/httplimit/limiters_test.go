package httplimit

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Shadow mode: the request passes, and the headers say what enforcing the
// limit would do. On miniredis and on real Redis.
func TestShadowMode(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			lim := newLimiter(t, b.client, ratelimit.PerHour(2), ratelimit.WithNamespace("shadow"), ratelimit.WithShadow())
			next := &okHandler{}
			h := mustMiddleware(t, lim).Handler(next)
			for i := range 2 {
				if w := serve(h, request("192.0.2.1:1")); w.Code != 200 {
					t.Fatalf("request %d: %d", i+1, w.Code)
				}
			}
			w := serve(h, request("192.0.2.1:1"))
			if w.Code != 200 || next.count() != 3 {
				t.Fatalf("over the limit in shadow mode: %d, next ran %d times", w.Code, next.count())
			}
			if w.Header().Get(HeaderRetryAfter) != "" {
				t.Error("Retry-After on a request that passed")
			}
			intParam(t, oneItem(t, w.Header(), HeaderRateLimit), "r", 0)
			if d := next.seen[2]; d.Result.Reason != ratelimit.ReasonShadow || !d.Result.Allowed {
				t.Errorf("Decision %+v, want an allowed shadow decision", d)
			}
		})
	}
}

// A MultiLimiter through LimiterFunc: the quota that decides names the
// policy in the headers and in the 429.
func TestMultiLimiterAdapter(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			multi, err := ratelimit.NewMulti(b.client, []ratelimit.Quota{
				{Name: "burst", Limit: ratelimit.PerMinute(60).WithBurst(3)},
				{Name: "hourly", Limit: ratelimit.PerHour(100)},
			}, ratelimit.WithNamespace("multi"), ratelimit.WithTimeout(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			lim := LimiterFunc(func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
				mr, err := multi.AllowN(ctx, id, cost)
				return mr.Result, err
			})
			h := mustMiddleware(t, lim, WithPolicyName("api")).Handler(&okHandler{})
			for i := range 3 {
				w := serve(h, request("192.0.2.1:1"))
				if w.Code != 200 {
					t.Fatalf("request %d: %d", i+1, w.Code)
				}
				if it := oneItem(t, w.Header(), HeaderRateLimit); it.val != "burst" {
					t.Errorf("request %d: policy %v, want the quota with the smallest share left", i+1, it.val)
				}
			}
			w := serve(h, request("192.0.2.1:1"))
			if w.Code != http.StatusTooManyRequests {
				t.Fatalf("4th request: %d", w.Code)
			}
			pol := oneItem(t, w.Header(), HeaderRateLimitPolicy)
			if pol.val != "burst" {
				t.Errorf("policy %v, want burst", pol.val)
			}
			intParam(t, pol, "q", 3)
			intParam(t, pol, "w", 3)
			p := decodeProblem(t, w.Header(), 429, w.Body.Bytes())
			if v := violated(t, p); len(v) != 1 || v[0] != "burst" {
				t.Errorf("violated-policies %v, want [burst]", v)
			}
		})
	}
}

// A quota name that cannot be a Structured Field String falls back to the
// Middleware's policy name.
func TestPolicyFallback(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: ratelimit.PerMinute(5), Remaining: 4, Quota: "bad\x7fname"}}
	w := serve(mustMiddleware(t, lim, WithPolicyName("api")).Handler(&okHandler{}), request("192.0.2.1:1"))
	if it := oneItem(t, w.Header(), HeaderRateLimit); it.val != "api" {
		t.Errorf("policy %v, want api", it.val)
	}
}

// A concurrency limit: two requests in flight per client, the third gets a
// 429, and the capacity comes back when a request ends. Over real sockets,
// so that net/http ends each request's context.
func TestConcurrencyAdapter(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			conc, err := ratelimit.NewConcurrency(b.client, 2, ratelimit.WithNamespace("conc-"+b.name), ratelimit.WithTimeout(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			mw := mustMiddleware(t, Concurrency(conc), WithPolicyName("inflight"), WithQuotaUnit("concurrent-requests"))
			release := make(chan struct{})
			entered := make(chan struct{}, 4)
			srv := httptest.NewServer(mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					entered <- struct{}{}
					<-release
				}
				_, _ = w.Write([]byte("ok"))
			})))
			defer srv.Close()
			defer srv.Client().CloseIdleConnections()
			get := func(path string) *http.Response {
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					t.Error(err)
					return nil
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp
			}
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() { get("/slow") })
			}
			<-entered
			<-entered
			resp := get("/fast")
			if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("third request in flight: %v, want 429", resp)
			}
			pol, err := parseSFList(resp.Header.Values(HeaderRateLimitPolicy))
			if err != nil || len(pol) != 1 || pol[0].val != "inflight" {
				t.Fatalf("RateLimit-Policy %q: %v", resp.Header.Values(HeaderRateLimitPolicy), err)
			}
			intParam(t, pol[0], "q", 2)
			if qu, _ := pol[0].param("qu"); qu != "concurrent-requests" {
				t.Errorf("qu = %v", qu)
			}
			if _, ok := pol[0].param("w"); ok {
				t.Error("w sent for a concurrency limit")
			}
			close(release)
			wg.Wait()
			// The leases are released as the two requests end: poll until a
			// request passes again, bounded.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if r := get("/fast"); r != nil && r.StatusCode == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("capacity did not come back after the requests ended")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// And a released lease is gone from Redis, not waiting out its TTL.
			deadline = time.Now().Add(5 * time.Second)
			for {
				res, err := conc.Peek(t.Context(), "ip:127.0.0.1/32")
				if err != nil {
					t.Fatal(err)
				}
				if res.Remaining == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("leases still held: %+v", res)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
