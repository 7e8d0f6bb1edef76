package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

func limitConfig(rpu int) string {
	return "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit:\n      unit: hour\n      requests_per_unit: " + strconv.Itoa(rpu) + "\n"
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func currentLimit(t *testing.T, p *proc) uint32 {
	t.Helper()
	resp := p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "reload")}})
	return resp.GetStatuses()[0].GetCurrentLimit().GetRequestsPerUnit()
}

// TestHotReload: a changed file changes the limits without a restart
// (polling), a bad file is refused with a log line and a metric while the
// old configuration stays, and SIGHUP reloads at once.
func TestHotReload(t *testing.T) {
	srv := redistest.Start(t)
	dir := writeConfig(t, map[string]string{"edge.yaml": limitConfig(10)})
	file := filepath.Join(dir, "edge.yaml")
	p := startProc(t, "-config", dir, "-redis", "redis://"+srv.Addr, "-reload-interval", "50ms")
	if got := currentLimit(t, p); got != 10 {
		t.Fatalf("limit %d, want 10", got)
	}
	write := func(body string) {
		// Write and rename, as editors and ConfigMaps do, so that the
		// poller never reads a half-written file.
		tmp := filepath.Join(dir, ".edge.tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write(limitConfig(20))
	eventually(t, 10*time.Second, "the new limit 20", func() bool { return currentLimit(t, p) == 20 })

	write("domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 30\n")
	eventually(t, 10*time.Second, "the refusal counted", func() bool {
		return metric(t, p.httpURL, `ratelimitd_config_reloads_total{result="failure"}`) == "1"
	})
	if got := metric(t, p.httpURL, "ratelimitd_config_last_reload_successful"); got != "0" {
		t.Fatalf("last_reload_successful %q", got)
	}
	if !strings.Contains(p.logs.String(), `edge.yaml:5: descriptors[0].rate_limit.unit: unknown unit`) {
		t.Fatalf("the refusal's log line does not name file, line and field:\n%s", p.logs.String())
	}
	if got := currentLimit(t, p); got != 20 {
		t.Fatalf("after a bad config the limit is %d, want the old 20", got)
	}

	// SIGHUP with polling off: the file changes, the limit does not until
	// the signal.
	write(limitConfig(40))
	q := startProc(t, "-config", dir, "-redis", "redis://"+srv.Addr, "-reload-interval", "0")
	write(limitConfig(50))
	if got := currentLimit(t, q); got != 40 {
		t.Fatalf("without polling nor SIGHUP the limit is %d, want 40", got)
	}
	if err := q.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "SIGHUP's limit 50", func() bool { return currentLimit(t, q) == 50 })
}

// TestRedisDown: with Redis stopped, a fail-open domain answers OK and a
// fail-closed one OVER_LIMIT, at the backend timeout or at once (breaker).
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	dir := writeConfig(t, map[string]string{
		"open.yaml":   "domain: open\nfail_mode: open\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
		"closed.yaml": "domain: closed\nfail_mode: closed\ntimeout: 100ms\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
	})
	p := startProc(t, "-config", dir, "-redis", "redis://"+srv.Addr)
	ask := func(domain string) rlsv3.RateLimitResponse_Code {
		return p.should(t, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*rlv3.RateLimitDescriptor{desc("k", "v")}}).GetOverallCode()
	}
	if ask("open") != rlsv3.RateLimitResponse_OK || ask("closed") != rlsv3.RateLimitResponse_OK {
		t.Fatal("first calls with Redis up")
	}
	if ask("open") != rlsv3.RateLimitResponse_OVER_LIMIT || ask("closed") != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatal("second calls with Redis up must be over the limit of 1")
	}
	srv.Stop()
	for i := range 8 { // past the breaker's 5 failures: open, then decided at once
		if got := ask("open"); got != rlsv3.RateLimitResponse_OK {
			t.Fatalf("fail open, Redis down, call %d: %v", i, got)
		}
		if got := ask("closed"); got != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("fail closed, Redis down, call %d: %v", i, got)
		}
	}
	if got := metric(t, p.httpURL, `ratelimit_decisions_total{algorithm="fixed_window",decision="allowed",namespace="open",reason="fail_open"}`); got == "" || got == "0" {
		t.Fatalf("fail_open decisions %q", got)
	}
	resp, err := httpGet(p.httpURL + "/readyz")
	if err != nil || resp != 503 {
		t.Fatalf("/readyz with Redis down: %d, %v", resp, err)
	}
}

// TestTwoProcesses: two ratelimitd processes on one real Redis share one
// limit. One descriptor is hammered through both (bounded in count and
// time); what they admit together stays within burst + rate × elapsed,
// elapsed measured on Redis's clock, and comes close to it. The backend
// timeout is long, so that Redis decides every call: on a loaded machine
// (-race, 2 cores) the default 50 ms is sometimes passed, and the fail-open
// admissions that follow are not the shared limit's.
func TestTwoProcesses(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cfg := "domain: edge\ndescriptors:\n  - key: api_key\n    rate_limit:\n      unit: second\n      requests_per_unit: 50\n      algorithm: token_bucket\n      burst: 10\n"
	dir := writeConfig(t, map[string]string{"edge.yaml": cfg})
	procs := []*proc{
		startProc(t, "-config", dir, "-redis", "redis://"+srv.Addr, "-redis-timeout", "5s"),
		startProc(t, "-config", dir, "-redis", "redis://"+srv.Addr, "-redis-timeout", "5s"),
	}
	const (
		workers  = 4 // per process
		maxCalls = 3000
		maxTime  = 2 * time.Second
	)
	req := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("api_key", "shared")}}
	ctx := context.Background()
	before, err := redistest.Time(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	var admitted, calls atomic.Int64
	stopAt := time.Now().Add(maxTime)
	var wg sync.WaitGroup
	for _, p := range procs {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for calls.Add(1) <= maxCalls && time.Now().Before(stopAt) {
					resp, err := p.client.ShouldRateLimit(ctx, req)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
						admitted.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	after, err := redistest.Time(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := after.Sub(before)
	bound := 10 + 50*elapsed.Seconds()
	got := float64(admitted.Load())
	t.Logf("%d calls through 2 processes in %v (Redis time): %v admitted, bound %.1f", min(calls.Load(), maxCalls), elapsed, got, bound)
	for _, p := range procs {
		if n := metric(t, p.httpURL, `ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="edge",reason="fail_open"}`); n != "" {
			t.Fatalf("%s decisions of the fail strategy: Redis did not decide every call", n)
		}
	}
	if got > bound {
		t.Fatalf("admitted %v > burst + rate × elapsed = %.1f", got, bound)
	}
	if got < 0.8*bound-10 {
		t.Fatalf("admitted %v, far below the bound %.1f: the processes did not use the limit", got, bound)
	}
}
