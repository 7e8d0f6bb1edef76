package httplimit

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestMain fails the package if a test leaves a goroutine behind (httptest
// servers, limiter calls).
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// backend is a Redis to run a test on: miniredis always, a real
// redis-server started by the test when it is installed.
type backend struct {
	name   string
	client redis.UniversalClient
}

func backends(t *testing.T) []backend {
	t.Helper()
	mr := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = mc.Close() })
	srv := redistest.Start(t)
	return []backend{{"miniredis", mc}, {"redis", srv.Client(t)}}
}

// newLimiter makes a limiter whose backend timeout no stall of a loaded CI
// machine reaches, so that a slow call cannot turn into a fail-open pass;
// opts may override it.
func newLimiter(t *testing.T, c redis.UniversalClient, l ratelimit.Limit, opts ...ratelimit.Option) *ratelimit.Limiter {
	t.Helper()
	opts = append([]ratelimit.Option{ratelimit.WithTimeout(10 * time.Second)}, opts...)
	lim, err := ratelimit.New(c, l, opts...)
	if err != nil {
		t.Fatalf("ratelimit.New: %v", err)
	}
	return lim
}

// deadClient talks to a listener of the test's own that closes every
// connection at once: every call fails with a connection error. (A free
// port nobody listens on could be taken by another process meanwhile.)
func deadClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	c := redis.NewClient(&redis.Options{
		Addr: ln.Addr().String(), ContextTimeoutEnabled: true,
		MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
	})
	t.Cleanup(func() {
		_ = c.Close()
		ln.Close()
		<-done
	})
	return c
}

// stubLimiter returns a fixed decision and records its calls.
type stubLimiter struct {
	mu    sync.Mutex
	res   ratelimit.Result
	err   error
	calls []stubCall
}

type stubCall struct {
	identity string
	cost     int64
}

func (s *stubLimiter) AllowN(_ context.Context, identity string, cost int64) (ratelimit.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, stubCall{identity, cost})
	return s.res, s.err
}

func (s *stubLimiter) lastCall(t *testing.T) stubCall {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		t.Fatal("limiter was not called")
	}
	return s.calls[len(s.calls)-1]
}

func mustMiddleware(t testing.TB, lim Limiter, opts ...Option) *Middleware {
	t.Helper()
	m, err := New(lim, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// okHandler answers 200 "ok" and records the Decision it saw.
type okHandler struct {
	mu   sync.Mutex
	seen []Decision
	hits int
}

func (h *okHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.hits++
	if d, ok := FromContext(r.Context()); ok {
		h.seen = append(h.seen, d)
	}
	h.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

func (h *okHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hits
}

// serve runs one request through h and returns the recorded response.
func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func request(remote string, hdr ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/hello", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

// decodeProblem checks the response is application/problem+json with the
// given status, and decodes it strictly.
func decodeProblem(t *testing.T, h http.Header, status int, body []byte) map[string]any {
	t.Helper()
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != ProblemContentType {
		t.Fatalf("Content-Type %q, want %s", h.Get("Content-Type"), ProblemContentType)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if got, ok := m["status"].(float64); !ok || int(got) != status {
		t.Errorf("problem status %v, want %d", m["status"], status)
	}
	for _, k := range []string{"type", "title"} {
		if s, ok := m[k].(string); !ok || s == "" {
			t.Errorf("problem %s missing: %s", k, body)
		}
	}
	return m
}

// violated returns the violated-policies member, failing unless it is an
// array of strings.
func violated(t *testing.T, p map[string]any) []string {
	t.Helper()
	raw, ok := p["violated-policies"].([]any)
	if !ok {
		t.Fatalf("violated-policies is %T %v, want an array", p["violated-policies"], p["violated-policies"])
	}
	var out []string
	for _, v := range raw {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("violated-policies holds %T", v)
		}
		out = append(out, s)
	}
	return out
}

func isBackend(err error) bool { return errors.Is(err, ratelimit.ErrBackend) }
