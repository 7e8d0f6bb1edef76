package httplimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
)

// A real limiter through the middleware: the draft-11 numbers follow the
// bucket down to the 429, on miniredis and on real Redis.
func TestMiddlewareBurstThen429(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			lim := newLimiter(t, b.client, ratelimit.PerHour(3), ratelimit.WithNamespace("burst"))
			next := &okHandler{}
			h := mustMiddleware(t, lim).Handler(next)
			for i := range 3 {
				w := serve(h, request("192.0.2.1:1"))
				if w.Code != 200 {
					t.Fatalf("request %d: %d", i+1, w.Code)
				}
				cur := oneItem(t, w.Header(), HeaderRateLimit)
				pol := oneItem(t, w.Header(), HeaderRateLimitPolicy)
				if pol.val != "burst" || cur.val != "burst" {
					t.Errorf("policy name %v/%v, want the namespace", pol.val, cur.val)
				}
				intParam(t, pol, "q", 3)
				intParam(t, pol, "w", 3600)
				intParam(t, cur, "r", int64(2-i))
				// Full again after (i+1) tokens of 1200 s each, less the
				// little time that passed.
				tv, _ := cur.param("t")
				if n, _ := tv.(int64); n < int64(i+1)*1200-5 || n > int64(i+1)*1200 {
					t.Errorf("request %d: t=%v, want about %d", i+1, tv, (i+1)*1200)
				}
			}
			w := serve(h, request("192.0.2.1:1"))
			if w.Code != http.StatusTooManyRequests {
				t.Fatalf("4th request: %d, want 429", w.Code)
			}
			ra, err := strconv.Atoi(w.Header().Get(HeaderRetryAfter))
			if err != nil || ra < 1190 || ra > 1200 {
				t.Errorf("Retry-After %q, want about 1200", w.Header().Get(HeaderRetryAfter))
			}
			cur := oneItem(t, w.Header(), HeaderRateLimit)
			intParam(t, cur, "r", 0)
			intParam(t, cur, "t", int64(ra))
			p := decodeProblem(t, w.Header(), 429, w.Body.Bytes())
			if p["type"] != ProblemQuotaExceeded || p["title"] != "Quota Exceeded" {
				t.Errorf("problem %v", p)
			}
			if v := violated(t, p); len(v) != 1 || v[0] != "burst" {
				t.Errorf("violated-policies %v", v)
			}
			if next.count() != 3 {
				t.Errorf("next handler ran %d times, want 3", next.count())
			}
			// Another client is unaffected.
			if c := serve(h, request("192.0.2.2:1")).Code; c != 200 {
				t.Errorf("another client: %d", c)
			}
		})
	}
}

// Under real concurrency, over real sockets, exactly the burst passes.
func TestMiddlewareConcurrent(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			// Fail closed, with a timeout no stall of a loaded CI machine
			// reaches: a backend failure shows as a 503, never as an
			// extra 200.
			lim := newLimiter(t, b.client, ratelimit.PerHour(10), ratelimit.WithNamespace("conc"),
				ratelimit.WithFailStrategy(ratelimit.FailClosed), ratelimit.WithTimeout(10*time.Second))
			srv := httptest.NewServer(mustMiddleware(t, lim).Handler(&okHandler{}))
			defer srv.Close()
			var mu sync.Mutex
			codes := map[int]int{}
			var wg sync.WaitGroup
			for range 30 {
				wg.Go(func() {
					resp, err := srv.Client().Get(srv.URL)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.Header.Get(HeaderRateLimit) == "" {
						t.Errorf("a %d without RateLimit: not decided by the quota", resp.StatusCode)
					}
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
				})
			}
			wg.Wait()
			srv.Client().CloseIdleConnections()
			if codes[200] != 10 || codes[429] != 20 {
				t.Errorf("codes %v, want 10×200 and 20×429", codes)
			}
		})
	}
}

func TestFailClosedIs503(t *testing.T) {
	lim := newLimiter(t, deadClient(t), ratelimit.PerMinute(10),
		ratelimit.WithFailStrategy(ratelimit.FailClosed), ratelimit.WithNamespace("fc"))
	for _, tc := range []struct {
		opts  []Option
		retry string
	}{
		{nil, "1"},
		{[]Option{WithUnavailableRetryAfter(4500 * time.Millisecond)}, "5"},
	} {
		next := &okHandler{}
		w := serve(mustMiddleware(t, lim, tc.opts...).Handler(next), request("192.0.2.1:1"))
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", w.Code)
		}
		if next.count() != 0 {
			t.Error("next handler ran")
		}
		if got := w.Header().Get(HeaderRetryAfter); got != tc.retry {
			t.Errorf("Retry-After %q, want %q", got, tc.retry)
		}
		checkFields(t, StyleDraft11, "fc", w.Header(), wantFields{}) // state unknown: none
		p := decodeProblem(t, w.Header(), 503, w.Body.Bytes())
		if p["type"] != ProblemTemporaryReducedCapacity {
			t.Errorf("problem type %v", p["type"])
		}
		if v := violated(t, p); len(v) != 1 || v[0] != "fc" {
			t.Errorf("violated-policies %v", v)
		}
	}
}

func TestFailOpenPasses(t *testing.T) {
	lim := newLimiter(t, deadClient(t), ratelimit.PerMinute(10), ratelimit.WithNamespace("fo"))
	next := &okHandler{}
	w := serve(mustMiddleware(t, lim).Handler(next), request("192.0.2.1:1"))
	if w.Code != 200 || next.count() != 1 {
		t.Fatalf("status %d, next ran %d times", w.Code, next.count())
	}
	checkFields(t, StyleDraft11, "fo", w.Header(), wantFields{})
	if w.Header().Get(HeaderRetryAfter) != "" {
		t.Error("Retry-After on a passed request")
	}
	d := next.seen[0]
	if d.Result.Reason != ratelimit.ReasonFailOpen || !isBackend(d.Err) {
		t.Errorf("Decision %+v, want fail_open with the backend error", d)
	}
}

func TestCostFunctions(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			lim := newLimiter(t, b.client, ratelimit.PerHour(100), ratelimit.WithNamespace("llm"))
			next := &okHandler{}
			h := mustMiddleware(t, lim, WithCost(CostByQuery("tokens", 1)), WithKey(KeyByHeader("X-API-Key"))).Handler(next)
			do := func(q string) *httptest.ResponseRecorder {
				r := httptest.NewRequest(http.MethodPost, "/generate"+q, nil)
				r.Header.Set("X-API-Key", "k1")
				return serve(h, r)
			}
			if w := do("?tokens=60"); w.Code != 200 {
				t.Fatalf("60 tokens: %d", w.Code)
			} else {
				intParam(t, oneItem(t, w.Header(), HeaderRateLimit), "r", 40)
			}
			if w := do("?tokens=50"); w.Code != 429 {
				t.Errorf("50 more tokens: %d, want 429", w.Code)
			}
			if w := do(""); w.Code != 200 {
				t.Errorf("default cost 1: %d", w.Code)
			} else {
				intParam(t, oneItem(t, w.Header(), HeaderRateLimit), "r", 39)
			}
			for _, q := range []string{"?tokens=abc", "?tokens=-1", "?tokens=101"} {
				w := do(q)
				if w.Code != 400 {
					t.Errorf("%s: %d, want 400", q, w.Code)
					continue
				}
				p := decodeProblem(t, w.Header(), 400, w.Body.Bytes())
				if d, _ := p["detail"].(string); !strings.HasPrefix(d, "ratelimit:") {
					t.Errorf("%s: detail %q", q, d)
				}
			}
			if len(next.seen) != 2 || next.seen[0].Cost != 60 {
				t.Errorf("decisions seen %+v", next.seen)
			}
		})
	}
}

func TestCostByContentLength(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: ratelimit.PerMinute(1 << 20)}}
	h := mustMiddleware(t, lim, WithCost(CostByContentLength), WithQuotaUnit("content-bytes")).Handler(&okHandler{})
	r := httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader("12345"))
	r.RemoteAddr = "192.0.2.1:1"
	if w := serve(h, r); w.Code != 200 || lim.lastCall(t).cost != 5 {
		t.Errorf("status %d, cost %d; want 200 and 5", w.Code, lim.lastCall(t).cost)
	}
	r = httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader("12345"))
	r.ContentLength = -1 // chunked
	if w := serve(h, r); w.Code != 400 {
		t.Errorf("unknown length: %d, want 400", w.Code)
	}
}

func TestExempt(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: false, Limit: ratelimit.PerMinute(1), RetryAfter: time.Second}}
	next := &okHandler{}
	h := mustMiddleware(t, lim, WithExempt(func(r *http.Request) bool { return r.URL.Path == "/healthz" })).Handler(next)
	w := serve(h, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != 200 || len(lim.calls) != 0 || len(w.Header().Values(HeaderRateLimit)) != 0 {
		t.Errorf("exempt: status %d, %d limiter calls, headers %v", w.Code, len(lim.calls), w.Header())
	}
	if w := serve(h, httptest.NewRequest(http.MethodGet, "/api", nil)); w.Code != 429 {
		t.Errorf("not exempt: %d", w.Code)
	}
}

func TestIdentityErrors(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: ratelimit.PerMinute(1)}}
	// Default: 400, and the limiter is not asked.
	w := serve(mustMiddleware(t, lim, WithKey(KeyByHeader("X-API-Key"))).Handler(&okHandler{}), request("192.0.2.1:1"))
	if w.Code != 400 || len(lim.calls) != 0 {
		t.Fatalf("status %d, %d calls; want 400 and none", w.Code, len(lim.calls))
	}
	p := decodeProblem(t, w.Header(), 400, w.Body.Bytes())
	if p["type"] != "about:blank" {
		t.Errorf("type %v", p["type"])
	}
	// The socket address of a unix listener is no identity either.
	if w := serve(mustMiddleware(t, lim).Handler(&okHandler{}), request("@")); w.Code != 400 {
		t.Errorf("unix socket: %d", w.Code)
	}
	// A custom handler sees an ErrNoIdentity.
	var got error
	h := mustMiddleware(t, lim, WithKey(KeyByHeader("X-API-Key")), WithErrorHandler(func(w http.ResponseWriter, _ *http.Request, err error) {
		got = err
		w.WriteHeader(http.StatusUnauthorized)
	})).Handler(&okHandler{})
	if w := serve(h, request("192.0.2.1:1")); w.Code != 401 || !errors.Is(got, ErrNoIdentity) {
		t.Errorf("custom: status %d, err %v", w.Code, got)
	}
	// An identity the limiter refuses (too long) goes to the error handler.
	lim2 := newLimiter(t, deadClient(t), ratelimit.PerMinute(1))
	long := request("192.0.2.1:1", "X-API-Key", strings.Repeat("k", ratelimit.MaxIdentityLen+1))
	h = mustMiddleware(t, lim2, WithKey(KeyByHeader("X-API-Key")), WithErrorHandler(func(w http.ResponseWriter, _ *http.Request, err error) {
		got = err
		w.WriteHeader(http.StatusBadRequest)
	})).Handler(&okHandler{})
	if w := serve(h, long); w.Code != 400 || !errors.Is(got, ratelimit.ErrInvalidIdentity) {
		t.Errorf("long identity: %d, %v", w.Code, got)
	}
}

func TestCustomDeniedHandler(t *testing.T) {
	lim := &stubLimiter{res: ratelimit.Result{Allowed: false, Limit: ratelimit.PerMinute(5), RetryAfter: 2 * time.Second}}
	h := mustMiddleware(t, lim, WithDeniedHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := FromContext(r.Context())
		if !ok || d.Result.Reason != ratelimit.ReasonQuota {
			DefaultDeniedHandler(w, r)
			return
		}
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "slow down")
	}))).Handler(&okHandler{})
	w := serve(h, request("192.0.2.1:1"))
	if w.Code != 429 || w.Body.String() != "slow down" || w.Header().Get(HeaderRetryAfter) != "2" || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("custom denial: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	if len(w.Header().Values(HeaderRateLimit)) != 1 {
		t.Error("headers missing on a custom denial")
	}
}

// Admit decides inside a handler, with a cost known only there; the
// per-route HandlerFunc form keeps limits of different routes apart.
func TestAdmitAndPerRoute(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			llm := mustMiddleware(t, newLimiter(t, b.client, ratelimit.PerHour(10), ratelimit.WithNamespace("tokens")))
			hello := mustMiddleware(t, newLimiter(t, b.client, ratelimit.PerHour(1), ratelimit.WithNamespace("hello")))
			mux := http.NewServeMux()
			mux.HandleFunc("POST /gen", func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				r, ok := llm.Admit(w, r, int64(len(body)))
				if !ok {
					return
				}
				d, _ := FromContext(r.Context())
				_, _ = io.WriteString(w, strconv.FormatInt(d.Result.Remaining, 10))
			})
			mux.Handle("GET /api/hello", hello.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") }))
			post := func(body string) *httptest.ResponseRecorder {
				r := httptest.NewRequest(http.MethodPost, "/gen", strings.NewReader(body))
				r.RemoteAddr = "192.0.2.1:1"
				return serve(mux, r)
			}
			if w := post("1234567"); w.Code != 200 || w.Body.String() != "3" {
				t.Errorf("7 tokens: %d %q", w.Code, w.Body.String())
			}
			if w := post("1234"); w.Code != 429 {
				t.Errorf("4 more: %d", w.Code)
			}
			if w := serve(mux, request("192.0.2.1:1")); w.Code != 200 || w.Body.String() != "hi" {
				t.Errorf("hello has its own limit: %d", w.Code)
			}
			if w := serve(mux, request("192.0.2.1:1")); w.Code != 429 {
				t.Errorf("second hello: %d", w.Code)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	lim := &stubLimiter{}
	if _, err := New(nil); !errors.Is(err, ratelimit.ErrInvalidOption) {
		t.Errorf("nil limiter: %v", err)
	}
	for i, o := range []Option{
		WithKey(nil), WithCost(nil), WithDeniedHandler(nil), WithErrorHandler(nil),
		WithHeaderStyle(HeaderStyle(9)), WithPolicyName(""), WithPolicyName("é"),
		WithPolicyName(strings.Repeat("p", 65)), WithQuotaUnit("\n"), WithPartitionKey([]byte("short")),
		WithUnavailableRetryAfter(0),
	} {
		_, err := New(lim, o)
		if !errors.Is(err, ratelimit.ErrInvalidOption) || !strings.HasPrefix(err.Error(), "ratelimit: ") {
			t.Errorf("option %d: %v, want ErrInvalidOption", i, err)
		}
	}
	m := mustMiddleware(t, lim, nil) // nil options are ignored
	if m.Policy() != DefaultPolicy {
		t.Errorf("policy %q, want %q for a limiter without a namespace", m.Policy(), DefaultPolicy)
	}
	defer func() {
		if recover() == nil {
			t.Error("Must did not panic")
		}
	}()
	Must(nil)
}

// A nil limiter, also a typed nil one, is refused at construction instead
// of panicking on the first request.
func TestNewNilLimiter(t *testing.T) {
	for name, lim := range map[string]Limiter{
		"nil":                    nil,
		"typed nil Limiter":      (*ratelimit.Limiter)(nil),
		"nil LimiterFunc":        LimiterFunc(nil),
		"nil ConcurrencyLimiter": Concurrency(nil),
	} {
		if _, err := New(lim); !errors.Is(err, ratelimit.ErrInvalidOption) {
			t.Errorf("%s: New gave %v, want ErrInvalidOption", name, err)
		}
	}
}

// A cost the request cannot give is an error both sentinels match.
func TestInvalidCostSentinels(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/?tokens=lots", nil)
	_, err := CostByQuery("tokens", 1)(r)
	if !errors.Is(err, ErrInvalidCost) || !errors.Is(err, ratelimit.ErrInvalidCost) || !strings.HasPrefix(err.Error(), "ratelimit:") {
		t.Fatalf("CostByQuery(lots): %v", err)
	}
}

// TestLogAttrs: the decisions of a Middleware carry its policy and the
// route the ServeMux matched, which the slog subscriber writes with
// WithContextAttrs(LogAttrs).
func TestLogAttrs(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	lim := newLimiter(t, c, ratelimit.PerMinute(5), ratelimit.WithNamespace("api"),
		ratelimit.WithSubscribers(telemetry.Slog(logger, telemetry.WithContextAttrs(LogAttrs))))
	mw := mustMiddleware(t, lim, WithPolicyName("public"))
	mux := http.NewServeMux()
	mux.Handle("GET /items/{id}", mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/items/42", nil))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if line["policy"] != "public" || line["route"] != "GET /items/{id}" {
		t.Fatalf("log line %v, want policy public and route GET /items/{id}", line)
	}
	if LogAttrs(context.Background()) != nil {
		t.Fatal("attributes outside a Middleware's decision")
	}
}
