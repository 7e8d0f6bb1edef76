package httplimit

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// wantFields is what the rate-limit fields of a response must say.
type wantFields struct {
	present bool
	q, w    int64 // policy
	r, t    int64 // current state
}

var rateLimitFieldNames = []string{
	HeaderRateLimitPolicy, HeaderRateLimit,
	HeaderRateLimitLimit, HeaderRateLimitRemaining, HeaderRateLimitReset,
	HeaderXRateLimitLimit, HeaderXRateLimitRemain, HeaderXRateLimitReset,
}

// checkFields parses the fields of style back and compares them with want.
// Fields of the other styles must be absent.
func checkFields(t *testing.T, style HeaderStyle, policy string, h http.Header, want wantFields) {
	t.Helper()
	own := map[HeaderStyle][]string{
		StyleDraft11:    {HeaderRateLimitPolicy, HeaderRateLimit},
		StyleLegacy:     {HeaderRateLimitLimit, HeaderRateLimitRemaining, HeaderRateLimitReset},
		StyleXRateLimit: {HeaderXRateLimitLimit, HeaderXRateLimitRemain, HeaderXRateLimitReset},
	}[style]
	for _, name := range rateLimitFieldNames {
		mine := false
		for _, o := range own {
			mine = mine || o == name
		}
		if (!mine || !want.present) && len(h.Values(name)) > 0 {
			t.Errorf("%s: unexpected %s: %q", style, name, h.Values(name))
		}
	}
	if !want.present {
		return
	}
	switch style {
	case StyleDraft11:
		pol := oneItem(t, h, HeaderRateLimitPolicy)
		cur := oneItem(t, h, HeaderRateLimit)
		for _, it := range []sfItem{pol, cur} {
			if it.val != policy {
				t.Errorf("policy item %#v, want the String %q", it.val, policy)
			}
		}
		intParam(t, pol, "q", want.q)
		intParam(t, pol, "w", want.w)
		intParam(t, cur, "r", want.r)
		intParam(t, cur, "t", want.t)
	case StyleLegacy, StyleXRateLimit:
		for i, v := range []int64{want.q, want.r, want.t} {
			got := h.Values(own[i])
			if len(got) != 1 {
				t.Errorf("%s: %d lines %q, want 1", own[i], len(got), got)
				continue
			}
			n, err := strconv.ParseInt(got[0], 10, 64)
			if err != nil || n != v || n < 0 {
				t.Errorf("%s = %q, want %d", own[i], got[0], v)
			}
		}
	}
}

func oneItem(t *testing.T, h http.Header, name string) sfItem {
	t.Helper()
	items, err := parseSFList(h.Values(name))
	if err != nil {
		t.Fatalf("%s %q: %v", name, h.Values(name), err)
	}
	if len(items) != 1 {
		t.Fatalf("%s has %d items, want 1", name, len(items))
	}
	return items[0]
}

func intParam(t *testing.T, it sfItem, key string, want int64) {
	t.Helper()
	v, ok := it.param(key)
	if !ok {
		t.Errorf("parameter %s missing", key)
		return
	}
	if n, ok := v.(int64); !ok || n != want {
		t.Errorf("parameter %s = %#v, want Integer %d", key, v, want)
	}
}

// TestHeaderStyles runs every style against every kind of decision, with a
// stub limiter so that every number is exact.
func TestHeaderStyles(t *testing.T) {
	limit := ratelimit.PerMinute(100).WithBurst(200) // q=200 per w=120 s
	backendErr := &ratelimit.BackendError{Type: ratelimit.ErrorConnection, Err: errors.New("refused")}
	decisions := []struct {
		name       string
		res        ratelimit.Result
		err        error
		status     int
		retryAfter string
		fields     wantFields
	}{
		{"allowed", ratelimit.Result{Allowed: true, Limit: limit, Remaining: 150, ResetAfter: 30*time.Second + time.Millisecond},
			nil, 200, "", wantFields{true, 200, 120, 150, 31}},
		{"allowed-full", ratelimit.Result{Allowed: true, Limit: limit, Remaining: 200},
			nil, 200, "", wantFields{true, 200, 120, 200, 0}},
		{"denied", ratelimit.Result{Allowed: false, Limit: limit, Remaining: 0, RetryAfter: 1500 * time.Millisecond, ResetAfter: 2 * time.Minute},
			nil, 429, "2", wantFields{true, 200, 120, 0, 2}},
		{"denied-sub-ms", ratelimit.Result{Allowed: false, Limit: limit, Remaining: 3, RetryAfter: time.Microsecond, ResetAfter: time.Minute},
			nil, 429, "1", wantFields{true, 200, 120, 3, 1}},
		{"fail-open", ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen, Limit: limit},
			backendErr, 200, "", wantFields{}},
		{"fail-closed", ratelimit.Result{Allowed: false, Reason: ratelimit.ReasonFailClosed, Limit: limit},
			backendErr, 503, "1", wantFields{}},
	}
	for _, style := range []HeaderStyle{StyleDraft11, StyleLegacy, StyleXRateLimit, StyleNone} {
		for _, d := range decisions {
			t.Run(style.String()+"/"+d.name, func(t *testing.T) {
				lim := &stubLimiter{res: d.res, err: d.err}
				next := &okHandler{}
				m := mustMiddleware(t, lim, WithHeaderStyle(style), WithPolicyName("api"))
				w := serve(m.Handler(next), request("192.0.2.1:1234"))
				if w.Code != d.status {
					t.Fatalf("status %d, want %d", w.Code, d.status)
				}
				want := d.fields
				if style == StyleNone {
					want.present = false
				}
				checkFields(t, style, "api", w.Header(), want)
				if got := w.Header().Get(HeaderRetryAfter); got != d.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, d.retryAfter)
				}
				if d.status == 200 {
					if next.count() != 1 || len(next.seen) != 1 {
						t.Fatalf("next handler ran %d times", next.count())
					}
					got := next.seen[0]
					if got.Result != d.res || got.Policy != "api" || got.Cost != 1 || !errors.Is(got.Err, d.err) {
						t.Errorf("Decision in context %+v, want result %+v", got, d.res)
					}
					return
				}
				if next.count() != 0 {
					t.Errorf("next handler ran on a %d", w.Code)
				}
				if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", cc)
				}
				p := decodeProblem(t, w.Header(), d.status, w.Body.Bytes())
				wantType := ProblemQuotaExceeded
				if d.status == 503 {
					wantType = ProblemTemporaryReducedCapacity
				}
				if p["type"] != wantType {
					t.Errorf("problem type %v, want %s", p["type"], wantType)
				}
				if v := violated(t, p); len(v) != 1 || v[0] != "api" {
					t.Errorf("violated-policies %v, want [api]", v)
				}
				if s, _ := p["detail"].(string); s == "" {
					t.Errorf("problem detail empty")
				}
			})
		}
	}
}

func TestPolicyParameters(t *testing.T) {
	limit := ratelimit.Limit{Rate: 10, Per: time.Second, Burst: 5} // refills 5 in 0.5 s: w=1
	lim := &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: limit, Remaining: 4, ResetAfter: 100 * time.Millisecond}}
	secret := []byte("0123456789abcdef")
	m := mustMiddleware(t, lim, WithPolicyName(`we"ird\name`), WithQuotaUnit("content-bytes"), WithPartitionKey(secret))
	w := serve(m.Handler(&okHandler{}), request("192.0.2.1:1"))
	pol := oneItem(t, w.Header(), HeaderRateLimitPolicy)
	cur := oneItem(t, w.Header(), HeaderRateLimit)
	if pol.val != `we"ird\name` {
		t.Errorf("policy name round trip: %q", pol.val)
	}
	intParam(t, pol, "q", 5)
	intParam(t, pol, "w", 1)
	intParam(t, cur, "r", 4)
	intParam(t, cur, "t", 1)
	if qu, _ := pol.param("qu"); qu != "content-bytes" {
		t.Errorf("qu = %#v", qu)
	}
	pk1, _ := pol.param("pk")
	pk2, _ := cur.param("pk")
	b1, ok1 := pk1.([]byte)
	b2, ok2 := pk2.([]byte)
	if !ok1 || !ok2 || len(b1) != 12 || string(b1) != string(b2) {
		t.Fatalf("pk %#v / %#v, want the same 12-byte Byte Sequence", pk1, pk2)
	}
	// pk is per identity, and never the identity itself.
	w2 := serve(m.Handler(&okHandler{}), request("192.0.2.2:1"))
	pk3, _ := oneItem(t, w2.Header(), HeaderRateLimit).param("pk")
	if string(pk3.([]byte)) == string(b1) {
		t.Errorf("two clients share a pk")
	}
	for _, v := range append(w.Header().Values(HeaderRateLimit), w.Header().Values(HeaderRateLimitPolicy)...) {
		if contains(v, "192.0.2.1") {
			t.Errorf("the identity leaks into %q", v)
		}
	}
	// "requests" is the default unit and is not sent.
	m = mustMiddleware(t, lim, WithQuotaUnit("requests"))
	if _, ok := oneItem(t, serve(m.Handler(&okHandler{}), request("192.0.2.1:1")).Header(), HeaderRateLimitPolicy).param("qu"); ok {
		t.Errorf("qu sent for the default unit")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestWindow(t *testing.T) {
	for _, tc := range []struct {
		l ratelimit.Limit
		w int64
	}{
		{ratelimit.PerSecond(10), 1},
		{ratelimit.PerMinute(100), 60},
		{ratelimit.PerMinute(100).WithBurst(200), 120},
		{ratelimit.PerMinute(100).WithBurst(1), 1}, // 0.6 s
		{ratelimit.PerHour(7).WithBurst(2), 1029},  // 2*3600/7 = 1028.57
		{ratelimit.PerDay(1).WithBurst(1000), 86_400_000},
	} {
		if got := window(tc.l); got != tc.w {
			t.Errorf("window(%v) = %d, want %d", tc.l, got, tc.w)
		}
	}
}

func TestParseHeaderStyle(t *testing.T) {
	for _, s := range []HeaderStyle{StyleDraft11, StyleLegacy, StyleXRateLimit, StyleNone} {
		got, err := ParseHeaderStyle(s.String())
		if err != nil || got != s {
			t.Errorf("ParseHeaderStyle(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseHeaderStyle("draft7"); !errors.Is(err, ratelimit.ErrInvalidOption) {
		t.Errorf("unknown style: %v, want ErrInvalidOption", err)
	}
}

// Two middlewares on one request list one policy each in the draft-11
// fields, in the order they ran.
func TestStackedPolicies(t *testing.T) {
	limit := ratelimit.PerMinute(60)
	outer := mustMiddleware(t, &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: limit, Remaining: 59, ResetAfter: time.Second}}, WithPolicyName("global"))
	inner := mustMiddleware(t, &stubLimiter{res: ratelimit.Result{Allowed: true, Limit: limit.WithBurst(10), Remaining: 9, ResetAfter: time.Second}}, WithPolicyName("route"))
	w := serve(outer.Handler(inner.Handler(&okHandler{})), request("192.0.2.1:1"))
	items, err := parseSFList(w.Header().Values(HeaderRateLimit))
	if err != nil || len(items) != 2 || items[0].val != "global" || items[1].val != "route" {
		t.Fatalf("RateLimit %q: %v %v", w.Header().Values(HeaderRateLimit), items, err)
	}
	intParam(t, items[1], "r", 9)
}
