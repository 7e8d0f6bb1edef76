package httplimit

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// redisState returns every key with its DUMP, to compare before and after.
func redisState(t *testing.T, c redis.UniversalClient) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	out := map[string]string{}
	for _, k := range keys {
		out[k] = c.Dump(ctx, k).Val()
	}
	return out
}

// TestBadRequestsChangeNothing sends the middleware requests it cannot
// decide, on a real redis-server holding state: no identity, an identity
// the limiter refuses (1 MB API key), costs that are not non-negative
// integers, overflow int64, exceed the burst, or are unknown; and Admit with
// costs at the int64 limits. Each gets a 400 problem that does not repeat
// what the client sent, the next handler does not run, nothing changes in
// Redis and nothing is published.
func TestBadRequestsChangeNothing(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	var events int
	lim := newLimiter(t, c, ratelimit.PerMinute(10), ratelimit.WithSubscribers(
		ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) { events++ })))
	next := &okHandler{}
	byKey := mustMiddleware(t, lim, WithKey(KeyByHeader("X-API-Key")), WithCost(CostByQuery("cost", 1))).Handler(next)
	bySize := mustMiddleware(t, lim, WithKey(KeyByHeader("X-API-Key")), WithCost(CostByContentLength)).Handler(next)
	proxied := mustMiddleware(t, lim, WithKey(MustClientIP(TrustProxies("10.0.0.0/8")).Key)).Handler(next)
	if w := serve(byKey, request("192.0.2.1:1", "X-API-Key", "k1")); w.Code != 200 {
		t.Fatalf("a good request: %d", w.Code)
	}
	before := redisState(t, c)
	if len(before) == 0 {
		t.Fatal("no state in Redis: the test proves nothing")
	}
	published := events

	const secret = "RAWCLIENTVALUE"
	huge := secret + strings.Repeat("k", 1<<20)
	withQuery := func(q string) *http.Request {
		r := request("192.0.2.1:1", "X-API-Key", "k1")
		r.URL.RawQuery = q
		return r
	}
	chunked := httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader("body"))
	chunked.RemoteAddr, chunked.ContentLength = "192.0.2.1:1", -1
	chunked.Header.Set("X-API-Key", "k1")
	cases := []struct {
		name string
		h    http.Handler
		r    *http.Request
	}{
		{"no API key", byKey, request("192.0.2.1:1")},
		{"empty API key", byKey, request("192.0.2.1:1", "X-API-Key", " ")},
		{"1MB API key", byKey, request("192.0.2.1:1", "X-API-Key", huge)},
		{"API key over MaxIdentityLen", byKey, request("192.0.2.1:1", "X-API-Key", secret+strings.Repeat("k", ratelimit.MaxIdentityLen))},
		{"negative cost", byKey, withQuery("cost=-1")},
		{"cost not a number", byKey, withQuery("cost=" + secret)},
		{"cost past int64", byKey, withQuery("cost=9223372036854775808")},
		{"MinInt64 cost", byKey, withQuery("cost=-9223372036854775808")},
		{"MaxInt64 cost", byKey, withQuery("cost=9223372036854775807")},
		{"cost above the burst", byKey, withQuery("cost=11")},
		{"unknown length", bySize, chunked},
		{"socket address not an IP", proxied, request(secret)},
		{"forwarded garbage from a trusted proxy", proxied, request("10.0.0.1:1", "X-Forwarded-For", secret)},
		{"forwarded unknown from a trusted proxy", proxied, request("10.0.0.1:1", "X-Forwarded-For", "unknown")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hits := next.hits
			w := serve(tc.h, tc.r)
			if w.Code != http.StatusBadRequest || next.hits != hits {
				t.Fatalf("status %d, next handler ran %d times; want 400 and none", w.Code, next.hits-hits)
			}
			decodeProblem(t, w.Header(), 400, w.Body.Bytes())
			if strings.Contains(w.Body.String(), secret) || w.Body.Len() > 1024 {
				t.Errorf("the problem repeats what the client sent: %.200s", w.Body.String())
			}
		})
	}
	// Admit takes the cost from the handler, not the request.
	m := mustMiddleware(t, lim, WithKey(KeyByHeader("X-API-Key")))
	for _, cost := range []int64{-1, math.MinInt64, math.MaxInt64, 11} {
		w := httptest.NewRecorder()
		if _, ok := m.Admit(w, request("192.0.2.1:1", "X-API-Key", "k1"), cost); ok || w.Code != http.StatusBadRequest {
			t.Errorf("Admit(cost %d): ok=%v status %d, want a 400", cost, ok, w.Code)
		}
	}
	if after := redisState(t, c); len(after) != len(before) || !mapsEqual(before, after) {
		t.Errorf("bad requests changed Redis: %d keys before, %d after", len(before), len(after))
	}
	if events != published {
		t.Errorf("bad requests published %d events", events-published)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBadOptionsEveryConstructor completes TestNewErrors and
// TestClientIPOptions with the values left: each bad option of New,
// NewClientIP and ParseHeaderStyle is an error wrapping
// ratelimit.ErrInvalidOption with a "ratelimit:" message.
func TestBadOptionsEveryConstructor(t *testing.T) {
	lim := &stubLimiter{}
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"nil limiter", func() error { _, err := New(nil); return err }},
		{"policy with DEL", func() error { _, err := New(lim, WithPolicyName("a\x7fb")); return err }},
		{"policy with newline", func() error { _, err := New(lim, WithPolicyName("a\nb")); return err }},
		{"quota unit 65 bytes", func() error { _, err := New(lim, WithQuotaUnit(strings.Repeat("u", 65))); return err }},
		{"nil partition key", func() error { _, err := New(lim, WithPartitionKey(nil)); return err }},
		{"negative unavailable retry", func() error { _, err := New(lim, WithUnavailableRetryAfter(-time.Second)); return err }},
		{"MinInt64 unavailable retry", func() error { _, err := New(lim, WithUnavailableRetryAfter(math.MinInt64)); return err }},
		{"header style 255", func() error { _, err := New(lim, WithHeaderStyle(255)); return err }},
		{"parse header style", func() error { _, err := ParseHeaderStyle("draft99"); return err }},
		{"trust bad CIDR", func() error { _, err := NewClientIP(TrustProxies("10.0.0.0/33")); return err }},
		{"trust hostname", func() error { _, err := NewClientIP(TrustProxies("proxy.internal")); return err }},
		{"trust nothing", func() error { _, err := NewClientIP(TrustProxies()); return err }},
		{"zero hops", func() error { _, err := NewClientIP(TrustHops(0)); return err }},
		{"negative hops", func() error { _, err := NewClientIP(TrustHops(-1)); return err }},
		{"hops and proxies", func() error { _, err := NewClientIP(TrustHops(1), TrustProxies("10.0.0.1")); return err }},
		{"empty proxy header", func() error { _, err := NewClientIP(ProxyHeader("")); return err }},
		{"proxy header with colon", func() error { _, err := NewClientIP(ProxyHeader("X-Real-IP:")); return err }},
		{"proxy header with space", func() error { _, err := NewClientIP(ProxyHeader("X Real")); return err }},
		{"IPv4 prefix 0", func() error { _, err := NewClientIP(IPv4Prefix(0)); return err }},
		{"IPv4 prefix 33", func() error { _, err := NewClientIP(IPv4Prefix(33)); return err }},
		{"IPv6 prefix -1", func() error { _, err := NewClientIP(IPv6Prefix(-1)); return err }},
		{"IPv6 prefix 129", func() error { _, err := NewClientIP(IPv6Prefix(129)); return err }},
	} {
		err := tc.err()
		if !errors.Is(err, ratelimit.ErrInvalidOption) || !strings.HasPrefix(err.Error(), "ratelimit:") {
			t.Errorf("%s: %v, want ErrInvalidOption", tc.name, err)
		}
	}
}
