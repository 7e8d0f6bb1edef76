package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFlags(t *testing.T) {
	cfg, err := parseFlags(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:8080" || cfg.redisURL != "" || cfg.fail != ratelimit.FailOpen || cfg.style != httplimit.StyleDraft11 || cfg.load {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = parseFlags([]string{"-fail", "closed", "-header-style", "legacy", "-rate", "5", "-per", "1s", "-burst", "2", "-trusted-proxies", "10.0.0.0/8, 192.0.2.1"},
		env(map[string]string{"REDIS_URL": "redis://r:6379/0", "RATELIMIT_IDENTITY_KEY": "0123456789abcdef"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.fail != ratelimit.FailClosed || cfg.style != httplimit.StyleLegacy || cfg.redisURL != "redis://r:6379/0" ||
		cfg.rate != 5 || cfg.per != time.Second || cfg.burst != 2 || len(cfg.trusted) != 2 || string(cfg.identityKey) != "0123456789abcdef" {
		t.Errorf("parsed: %+v", cfg)
	}
	for _, args := range [][]string{{"-fail", "maybe"}, {"-header-style", "draft7"}, {"-log-level", "loud"}, {"extra"}, {"-load-max", "0"}} {
		if _, err := parseFlags(args, env(nil), io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	if _, err := parseFlags(nil, env(map[string]string{"RATELIMIT_IDENTITY_KEY": "short"}), io.Discard); err == nil {
		t.Error("a short identity key accepted")
	}
	if _, err := parseFlags([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// startTest starts the demo on a free port and shuts it down at the end.
func startTest(t *testing.T, cfg config) (*server, *strings.Builder) {
	t.Helper()
	cfg.addr = "127.0.0.1:0"
	var out strings.Builder
	s, err := start(context.Background(), cfg, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, &out
}

func testConfig(t *testing.T) config {
	t.Helper()
	// A timeout no stall of a loaded CI machine reaches: a slow Redis call
	// must not turn into a fail-open pass that breaks the counts.
	cfg, err := parseFlags([]string{"-rate", "60", "-per", "1h", "-burst", "5", "-timeout", "10s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type response struct {
	code int
	hdr  http.Header
	body []byte
}

func get(t *testing.T, url string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

// The draft-11 fields for one policy, as the demo sends them: a quoted
// policy name, then Integer parameters in order.
var (
	policyRE = regexp.MustCompile(`^"(api|llm)";q=(\d{1,15});w=(\d{1,15})$`)
	limitRE  = regexp.MustCompile(`^"(api|llm)";r=(\d{1,15});t=(\d{1,15})$`)
)

func fields(t *testing.T, h http.Header) (policies, limits map[string][2]int64) {
	t.Helper()
	parse := func(name string, re *regexp.Regexp) map[string][2]int64 {
		out := map[string][2]int64{}
		for _, line := range h.Values(name) {
			for item := range strings.SplitSeq(line, ",") {
				m := re.FindStringSubmatch(strings.TrimSpace(item))
				if m == nil {
					t.Fatalf("%s item %q is not well-formed", name, item)
				}
				a, _ := strconv.ParseInt(m[2], 10, 64)
				b, _ := strconv.ParseInt(m[3], 10, 64)
				out[m[1]] = [2]int64{a, b}
			}
		}
		return out
	}
	return parse("RateLimit-Policy", policyRE), parse("RateLimit", limitRE)
}

func checkServer(t *testing.T, s *server) {
	t.Helper()
	// The burst, then 429.
	for i := range 5 {
		r := get(t, s.url+"/api/hello")
		if r.code != 200 {
			t.Fatalf("request %d: %d %s", i+1, r.code, r.body)
		}
		pol, lim := fields(t, r.hdr)
		if pol["api"] != [2]int64{5, 300} {
			t.Errorf("policy %v, want q=5 w=300", pol["api"])
		}
		if got := lim["api"]; got[0] != int64(4-i) || got[1] < 1 || got[1] > 300 {
			t.Errorf("request %d: RateLimit %v, want r=%d", i+1, got, 4-i)
		}
		var body map[string]any
		if err := json.Unmarshal(r.body, &body); err != nil || body["remaining"] != float64(4-i) {
			t.Errorf("body %s: %v", r.body, err)
		}
	}
	r := get(t, s.url+"/api/hello")
	if r.code != 429 {
		t.Fatalf("after the burst: %d, want 429", r.code)
	}
	ra, err := strconv.Atoi(r.hdr.Get("Retry-After"))
	if err != nil || ra < 55 || ra > 60 {
		t.Errorf("Retry-After %q, want about 60", r.hdr.Get("Retry-After"))
	}
	if _, lim := fields(t, r.hdr); lim["api"] != [2]int64{0, int64(ra)} {
		t.Errorf("RateLimit on the 429: %v, want r=0 t=%d", lim["api"], ra)
	}
	if r.hdr.Get("Content-Type") != "application/problem+json" || r.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("429 headers: %v", r.hdr)
	}
	var p struct {
		Type     string   `json:"type"`
		Title    string   `json:"title"`
		Status   int      `json:"status"`
		Detail   string   `json:"detail"`
		Violated []string `json:"violated-policies"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("429 body %s: %v", r.body, err)
	}
	if p.Type != httplimit.ProblemQuotaExceeded || p.Status != 429 || p.Title == "" || p.Detail == "" || len(p.Violated) != 1 || p.Violated[0] != "api" {
		t.Errorf("429 problem %+v", p)
	}

	// An API key is another client, and generate lists both policies.
	r = get(t, s.url+"/api/generate?tokens=1500", "X-API-Key", "alice")
	if r.code != 200 {
		t.Fatalf("generate: %d %s", r.code, r.body)
	}
	pol, lim := fields(t, r.hdr)
	if pol["llm"] != [2]int64{4000, 24} || lim["llm"][0] != 2500 || lim["api"][0] != 4 {
		t.Errorf("generate fields: policies %v, limits %v", pol, lim)
	}
	r = get(t, s.url+"/api/generate?tokens=3000", "X-API-Key", "alice")
	if r.code != 429 {
		t.Errorf("3000 more tokens: %d, want 429", r.code)
	}
	if r = get(t, s.url+"/api/generate?tokens=lots", "X-API-Key", "alice"); r.code != 400 {
		t.Errorf("bad tokens: %d, want 400", r.code)
	}

	// The decisions above, counted on /metrics: api allowed 5 hellos and 3
	// generate calls (the outer limit spends before the inner one decides)
	// and blocked 1; llm allowed 1500 tokens and blocked one call.
	r = get(t, s.url+"/metrics")
	if r.code != 200 {
		t.Fatalf("/metrics: %d", r.code)
	}
	for series, want := range map[string]string{
		`ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="api",reason="quota"}`: "8",
		`ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="api",reason="quota"}`: "1",
		`ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="llm",reason="quota"}`: "1",
		`ratelimit_cost_total{algorithm="token_bucket",decision="allowed",namespace="llm",reason="quota"}`:      "1500",
		`ratelimit_backend_duration_seconds_count{algorithm="token_bucket",namespace="api"}`:                    "9",
	} {
		if got := metricValue(string(r.body), series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
	if strings.Contains(string(r.body), "alice") {
		t.Error("an identity appears in /metrics")
	}

	// Reserve, then settle: bob reserves 1000 tokens and uses 400, so 600
	// come back; a bad ?used= gives all 500 back with a 400. Redis has
	// them: 3500 more fit in the 4000 burst only because of the refunds.
	r = get(t, s.url+"/api/generate?tokens=1000&used=400", "X-API-Key", "bob")
	var settled struct {
		Refunded  int64 `json:"refunded_tokens"`
		Remaining int64 `json:"remaining_tokens"`
	}
	if err := json.Unmarshal(r.body, &settled); err != nil || r.code != 200 || settled.Refunded != 600 || settled.Remaining < 3600 || settled.Remaining > 3700 {
		t.Errorf("settled generate: %d %s (%v), want 600 refunded, about 3600 remaining", r.code, r.body, err)
	}
	if r = get(t, s.url+"/api/generate?tokens=500&used=600", "X-API-Key", "bob"); r.code != 400 {
		t.Errorf("used above the reservation: %d %s, want 400", r.code, r.body)
	}
	if r = get(t, s.url+"/api/generate?tokens=3500", "X-API-Key", "bob"); r.code != 200 {
		t.Errorf("3500 tokens after the refunds: %d %s, want 200", r.code, r.body)
	}
	r = get(t, s.url+"/metrics")
	if got := metricValue(string(r.body), `ratelimit_cost_refunded_total{algorithm="token_bucket",namespace="llm"}`); got != "1100" {
		t.Errorf("refunded tokens on /metrics: %q, want 1100", got)
	}

	// Unlimited routes.
	r = get(t, s.url+"/healthz")
	if r.code != 200 || !strings.Contains(string(r.body), `"redis":"up"`) || len(r.hdr.Values("RateLimit")) != 0 {
		t.Errorf("healthz: %d %s %v", r.code, r.body, r.hdr)
	}
}

func TestServerEmbeddedRedis(t *testing.T) {
	s, out := startTest(t, testConfig(t))
	checkServer(t, s)
	for _, want := range []string{"embedded miniredis", "curl -i " + s.url + "/api/hello", "X-API-Key: alice",
		"identities hashed: plain SHA-256: set RATELIMIT_IDENTITY_KEY", "redis: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
}

func TestServerRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testConfig(t)
	cfg.redisURL = "redis://" + srv.Addr + "/0"
	s, _ := startTest(t, cfg)
	checkServer(t, s)
}

// With Redis gone: fail open serves without headers, fail closed answers
// 503.
func TestServerRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	for _, fail := range []string{"open", "closed"} {
		cfg, err := parseFlags([]string{"-fail", fail}, env(map[string]string{"REDIS_URL": "redis://" + srv.Addr + "/0"}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := startTest(t, cfg)
		if r := get(t, s.url+"/api/hello"); r.code != 200 {
			t.Fatalf("fail %s, Redis up: %d", fail, r.code)
		}
		srv.Stop()
		r := get(t, s.url+"/api/hello")
		switch fail {
		case "open":
			if r.code != 200 || len(r.hdr.Values("RateLimit")) != 0 || !strings.Contains(string(r.body), "fail_open") {
				t.Errorf("fail open, Redis down: %d %v %s", r.code, r.hdr, r.body)
			}
		case "closed":
			if r.code != 503 || r.hdr.Get("Retry-After") != "1" || !strings.Contains(string(r.body), "temporary-reduced-capacity") {
				t.Errorf("fail closed, Redis down: %d %v %s", r.code, r.hdr, r.body)
			}
		}
		if r := get(t, s.url+"/healthz"); r.code != 200 || !strings.Contains(string(r.body), `"redis":"down"`) {
			t.Errorf("healthz with Redis down: %d %s", r.code, r.body)
		}
		srv.Restart()
	}
	// Started with Redis down, the demo says so at once.
	srv.Stop()
	cfg, err := parseFlags([]string{"-timeout", "300ms"}, env(map[string]string{"REDIS_URL": "redis://" + srv.Addr + "/0"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, out := startTest(t, cfg)
	if !strings.Contains(out.String(), "redis: NOT READY: ratelimit:") {
		t.Errorf("banner with Redis down:\n%s", out)
	}
	srv.Restart()
}

// With -breaker, Redis down: after five failures the shared breaker opens
// for both limiters and the next calls skip Redis (fail open, error type
// circuit_open), all on /metrics; with Redis back, a probe closes it.
func TestServerBreaker(t *testing.T) {
	srv := redistest.Start(t)
	cfg, err := parseFlags([]string{"-breaker"}, env(map[string]string{"REDIS_URL": "redis://" + srv.Addr + "/0"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, out := startTest(t, cfg)
	if !strings.Contains(out.String(), "circuit breaker: on") {
		t.Errorf("the banner does not show the breaker:\n%s", out)
	}
	if r := get(t, s.url+"/api/hello"); r.code != 200 || len(r.hdr.Values("RateLimit")) == 0 {
		t.Fatalf("Redis up: %d %v", r.code, r.hdr)
	}
	srv.Stop()
	for i := range ratelimit.DefaultBreakerFailures + 5 {
		if r := get(t, s.url+"/api/hello"); r.code != 200 || !strings.Contains(string(r.body), "fail_open") {
			t.Fatalf("call %d, Redis down: %d %s", i, r.code, r.body)
		}
	}
	metrics := string(get(t, s.url+"/metrics").body)
	for _, series := range []string{
		`ratelimit_circuit_open{algorithm="token_bucket",namespace="api"}`,
		`ratelimit_circuit_open{algorithm="token_bucket",namespace="llm"}`,
	} {
		if got := metricValue(metrics, series); got != "1" {
			t.Errorf("Redis down: %s = %q, want 1", series, got)
		}
	}
	skipped := metricValue(metrics, `ratelimit_backend_errors_total{algorithm="token_bucket",namespace="api",type="circuit_open"}`)
	if n, err := strconv.Atoi(skipped); err != nil || n < 1 {
		t.Errorf("no call skipped Redis: circuit_open errors %q", skipped)
	}

	srv.Restart()
	closed := `ratelimit_circuit_open{algorithm="token_bucket",namespace="api"}`
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := get(t, s.url+"/api/hello")
		got := metricValue(string(get(t, s.url+"/metrics").body), closed)
		if got == "0" && r.code == 200 && len(r.hdr.Values("RateLimit")) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis back for 10s: %s = %q, last response %d %v", closed, got, r.code, r.hdr)
		}
		time.Sleep(50 * time.Millisecond) // polling: the cool-down is a second
	}
}

// The load generator: the abusive client is limited, the well-behaved ones
// are not, and it stops when told.
func TestLoadGenerator(t *testing.T) {
	cfg, err := parseFlags([]string{"-rate", "600", "-per", "1m", "-burst", "10", "-timeout", "10s", "-load", "-load-max", "2000", "-load-for", "30s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startTest(t, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := s.load.counts()
		good := c["load-good-1"][200] + c["load-good-2"][200] + c["load-good-3"][200]
		if c["load-abuser"][429] >= 20 && good >= 9 && c["load-greedy"][429] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no steady state after 20s: %v", c)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	summary := s.load.stop()
	c := s.load.counts()
	for _, n := range []string{"load-good-1", "load-good-2", "load-good-3"} {
		for code, k := range c[n] {
			if code != 200 {
				t.Errorf("%s got %d × %d: %s", n, k, code, summary)
			}
		}
	}
	if !strings.Contains(summary, "load-abuser 200×") || strings.Contains(summary, "map[") {
		t.Errorf("summary %q, want status counts as 200×n", summary)
	}
	s.load = nil // stopped already
}

// run serves until its context ends and then shuts down cleanly.
func TestRunStopsOnSignal(t *testing.T) {
	cfg := testConfig(t)
	cfg.addr = "127.0.0.1:0"
	cfg.load = true
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuilder
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &out, io.Discard) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "load:") {
		if time.Now().After(deadline) {
			t.Fatalf("no banner: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(out.String(), "shutting down") || !strings.Contains(out.String(), "load: stopped after") {
		t.Errorf("output:\n%s", out.String())
	}
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// metricValue returns the value of one series in a text exposition, or "".
func metricValue(exposition, series string) string {
	for line := range strings.SplitSeq(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.Fields(rest)[0]
		}
	}
	return ""
}

// A start that fails after Redis is connected returns the error and closes
// what it opened (it used to panic on the nil server in its cleanup).
func TestStartFails(t *testing.T) {
	cfg, err := parseFlags([]string{"-rate", "0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.addr = "127.0.0.1:0"
	s, err := start(context.Background(), cfg, io.Discard, io.Discard)
	if err == nil || s != nil || !strings.Contains(err.Error(), "rate 0") {
		t.Fatalf("start with -rate 0: %v %v", s, err)
	}
	for _, u := range []string{"redis://u:s3cret@h:badport/0", "http://u:s3cret@h/0"} {
		cfg.redisURL = u
		if _, err := start(context.Background(), cfg, io.Discard, io.Discard); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("start with REDIS_URL %s: %v, want an error without the password", u, err)
		}
	}
}
