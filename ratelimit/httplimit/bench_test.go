package httplimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// BenchmarkMiddleware measures the middleware's own cost per request (key,
// headers, context), with a limiter that answers at once; the Redis round
// trip comes on top (see the ratelimit benchmarks).
func BenchmarkMiddleware(b *testing.B) {
	res := ratelimit.Result{Allowed: true, Limit: ratelimit.PerMinute(100).WithBurst(200), Remaining: 150, ResetAfter: 30 * time.Second}
	for _, style := range []HeaderStyle{StyleDraft11, StyleLegacy, StyleNone} {
		b.Run(style.String(), func(b *testing.B) {
			m := mustMiddleware(b, fixedLimiter{res}, WithHeaderStyle(style))
			h := m.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				w := &discardWriter{h: make(http.Header, 4)}
				h.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkClientIP resolves a three-hop X-Forwarded-For behind trusted
// proxies.
func BenchmarkClientIP(b *testing.B) {
	ip := MustClientIP(TrustProxies("10.0.0.0/8"))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:5000"
	r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.3")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ip.Key(r); err != nil {
			b.Fatal(err)
		}
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// fixedLimiter answers every call with one Result, recording nothing.
type fixedLimiter struct{ res ratelimit.Result }

func (f fixedLimiter) AllowN(context.Context, string, int64) (ratelimit.Result, error) {
	return f.res, nil
}
