// Package fwtest is what the framework examples' tests share: the two
// Redis backends and the check that a limited route answers as the
// library promises, whichever router serves it.
package fwtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

// Both runs f on an embedded miniredis whose clock stands still (exact is
// true: every header value is known) and on a real redis-server started
// for the test (exact is false: its clock runs, so a t may come out a
// little short). Without redis-server the second is skipped, or fails
// under RATELIMIT_REQUIRE_REDIS=1 (as in CI).
func Both(t *testing.T, f func(t *testing.T, rdb *redis.Client, exact bool)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		f(t, Client(t, mr.Addr()), true)
	})
	t.Run("redis", func(t *testing.T) {
		f(t, Client(t, redistest.Start(t).Addr), false)
	})
}

// Client is a client of addr, closed when the test ends.
func Client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Near reports whether got is want or, unless exact, up to 5 s less.
func Near(got, want int64, exact bool) bool {
	if exact {
		return got == want
	}
	return got <= want && got >= want-5
}

var (
	policyRE = regexp.MustCompile(`^"([^"]+)";q=(\d+);w=(\d+)$`)
	limitRE  = regexp.MustCompile(`^"([^"]+)";r=(\d+);t=(\d+)$`)
)

// Fields is a response's draft-11 RateLimit fields.
type Fields struct {
	Policy     string
	Q, W, R, T int64
}

// ParseFields reads RateLimit-Policy and RateLimit, one line each; ok is
// false when both are absent.
func ParseFields(t *testing.T, h http.Header) (f Fields, ok bool) {
	t.Helper()
	pol, rl := h.Values(httplimit.HeaderRateLimitPolicy), h.Values(httplimit.HeaderRateLimit)
	if len(pol) == 0 && len(rl) == 0 {
		return f, false
	}
	if len(pol) != 1 || len(rl) != 1 {
		t.Fatalf("want one RateLimit-Policy and one RateLimit, got %q and %q", pol, rl)
	}
	pm, lm := policyRE.FindStringSubmatch(pol[0]), limitRE.FindStringSubmatch(rl[0])
	if pm == nil || lm == nil || pm[1] != lm[1] {
		t.Fatalf("malformed fields: RateLimit-Policy %q, RateLimit %q", pol[0], rl[0])
	}
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	return Fields{Policy: pm[1], Q: num(pm[2]), W: num(pm[3]), R: num(lm[2]), T: num(lm[3])}, true
}

// Limited says what a limited route of an example should answer.
type Limited struct {
	// Path is the limited route, and Free one outside the limit.
	Path, Free string
	// Policy, Burst and Window are the limit: Burst requests, refilled in
	// Window seconds (a token bucket: one every Window/Burst seconds).
	Policy        string
	Burst, Window int64
	// Body is what the handler writes when it was let through, given the
	// Remaining it read from the Decision in its context.
	Body func(remaining int64) string
}

// Check sends Burst+1 GET requests to base+Path and one to base+Free:
// the first Burst get 200, the handler's body (so it saw the Decision) and
// the draft-11 fields counting down; the last gets 429 with the fields,
// Retry-After equal to t, Cache-Control: no-store and exactly one RFC
// 9457 problem body (so the framework neither ran the handler nor wrote
// a response of its own after the middleware's); the free route still
// answers 200 without rate-limit fields.
func Check(t *testing.T, base string, want Limited, exact bool) {
	t.Helper()
	perToken := want.Window / want.Burst
	for i := int64(1); i <= want.Burst; i++ {
		resp, body := get(t, base+want.Path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s, want 200", i, resp.StatusCode, body)
		}
		f, ok := ParseFields(t, resp.Header)
		if !ok || f.Policy != want.Policy || f.Q != want.Burst || f.W != want.Window || f.R != want.Burst-i || !Near(f.T, perToken*i, exact) {
			t.Errorf("request %d: fields %+v (present %v), want %q q=%d w=%d r=%d t≈%d", i, f, ok, want.Policy, want.Burst, want.Window, want.Burst-i, perToken*i)
		}
		if w := want.Body(want.Burst - i); body != w {
			t.Errorf("request %d: body %q, want %q", i, body, w)
		}
	}

	resp, body := get(t, base+want.Path)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("request %d: %d %s, want 429", want.Burst+1, resp.StatusCode, body)
	}
	f, ok := ParseFields(t, resp.Header)
	if !ok || f.Policy != want.Policy || f.Q != want.Burst || f.R != 0 || !Near(f.T, perToken, exact) {
		t.Errorf("429: fields %+v (present %v), want %q q=%d r=0 t≈%d", f, ok, want.Policy, want.Burst, perToken)
	}
	if ra := resp.Header.Get(httplimit.HeaderRetryAfter); ra != strconv.FormatInt(f.T, 10) {
		t.Errorf("429: Retry-After %q, want t (%d)", ra, f.T)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("429: Cache-Control %q, want no-store", cc)
	}
	if ct := resp.Header.Get("Content-Type"); ct != httplimit.ProblemContentType {
		t.Errorf("429: Content-Type %q, want %s", ct, httplimit.ProblemContentType)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(body)))
	dec.DisallowUnknownFields()
	var p httplimit.Problem
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("429 body %q: %v", body, err)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("429 body goes on after the problem: %q (the chain was not stopped)", rest)
	}
	if p.Status != http.StatusTooManyRequests || p.Type != httplimit.ProblemQuotaExceeded || len(p.ViolatedPolicies) != 1 || p.ViolatedPolicies[0] != want.Policy {
		t.Errorf("429 problem %+v", p)
	}

	resp, body = get(t, base+want.Free)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: %d %s, want 200 (outside the limit)", want.Free, resp.StatusCode, body)
	}
	if _, ok := ParseFields(t, resp.Header); ok {
		t.Errorf("%s carries rate-limit fields", want.Free)
	}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// Hello is the body the examples' limited handler writes.
func Hello(remaining int64) string { return fmt.Sprintf("hello, %d left\n", remaining) }
