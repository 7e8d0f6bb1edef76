package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

const llmConfig = `
domain: llm
descriptors:
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 1000
      quota_unit: tokens
`

// TestPythonClient runs examples/python/client.py, a client of the REST
// API with only Python's standard library, against the binary: check with
// a cost, refund by decided_at_us, a 429 with retry_after_ms, peek, reset.
func TestPythonClient(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	srv := redistest.Start(t)
	p := startProc(t, "-config", writeConfig(t, map[string]string{"llm.yaml": llmConfig}), "-redis", "redis://"+srv.Addr)
	out, err := exec.Command(python, "examples/python/client.py", p.httpURL).CombinedOutput()
	if err != nil {
		t.Fatalf("client.py: %v\n%s", err, out)
	}
	want := []string{
		"reserved 800: remaining 200",
		`RateLimit: "user";r=200;t=`,
		"refunded 500: remaining 700",
		"reserved 600 more",
		"over the limit: retry after",
		"peek: remaining 100",
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Fatalf("client.py output lacks %q:\n%s", w, out)
		}
	}
}

// TestRESTRefund: a refund must name the check it refunds; without
// decided_at_us it is a 400, with it the cost comes back once.
func TestRESTRefund(t *testing.T) {
	srv := redistest.Start(t)
	p := startProc(t, "-config", writeConfig(t, map[string]string{"llm.yaml": llmConfig}), "-redis", "redis://"+srv.Addr)
	body := func(cost uint64, at int64) map[string]any {
		b := map[string]any{"domain": "llm", "cost": cost, "descriptors": []any{
			map[string]any{"entries": []any{map[string]string{"key": "user", "value": "u"}}}}}
		if at != 0 {
			b["decided_at_us"] = at
		}
		return b
	}
	var chk restResponse
	if code, h := post(t, p.httpURL+"/v1/check", body(600, 0), &chk); code != 200 || chk.DecidedAtUS == 0 ||
		h.Get("RateLimit-Policy") != `"user";q=1000;w=3600;qu="tokens"` {
		t.Fatalf("check: %d %+v %v", code, chk, h)
	}
	if code, _ := post(t, p.httpURL+"/v1/refund", body(100, 0), nil); code != 400 {
		t.Fatalf("refund without decided_at_us: %d, want 400", code)
	}
	var ref restResponse
	if code, _ := post(t, p.httpURL+"/v1/refund", body(100, chk.DecidedAtUS), &ref); code != 200 || *ref.Descriptors[0].Remaining != 500 {
		t.Fatalf("refund: %d %+v", code, ref)
	}
	var over restResponse
	if code, h := post(t, p.httpURL+"/v1/check", body(600, 0), &over); code != 429 || over.Allowed || over.RetryAfterMS <= 0 || h.Get("Retry-After") == "" {
		t.Fatalf("check over the limit: %d %+v", code, over)
	}
	if code, _ := post(t, p.httpURL+"/v1/check", map[string]any{"domain": "llm", "bogus": 1}, nil); code != 400 {
		t.Fatalf("unknown field: %d, want 400", code)
	}
}
