package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestQuickStart runs the README's quick start on a real redis-server: the
// burst of 10 is admitted, the 11th request gets a 429 with the RateLimit
// fields, and /metrics counts both.
func TestQuickStart(t *testing.T) {
	srv := redistest.Start(t)
	api, closeRedis, err := newAPI(t.Context(), "redis://"+srv.Addr+"/0")
	if err != nil {
		t.Fatal(err)
	}
	defer closeRedis()
	web := httptest.NewServer(api)
	defer web.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := web.Client().Get(web.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, string(body)
	}
	for i := range 10 {
		if res, body := get("/hello"); res.StatusCode != http.StatusOK || body != "hello\n" {
			t.Fatalf("request %d: %d %q, want 200 hello", i+1, res.StatusCode, body)
		}
	}
	res, _ := get("/hello")
	if res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("request 11: %d, want 429", res.StatusCode)
	}
	for _, field := range []string{"RateLimit", "RateLimit-Policy", "Retry-After"} {
		if res.Header.Get(field) == "" {
			t.Errorf("the 429 lacks %s: %v", field, res.Header)
		}
	}
	if got := res.Header.Get("RateLimit-Policy"); !strings.HasPrefix(got, `"api";q=10;`) {
		t.Errorf("RateLimit-Policy %q, want the api policy with a quota of 10", got)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`ratelimit_decisions_total{algorithm="token_bucket",decision="allowed",namespace="api",reason="quota"} 10`,
		`ratelimit_decisions_total{algorithm="token_bucket",decision="blocked",namespace="api",reason="quota"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestQuickStartNoRedis: with nothing listening, newAPI fails at once with
// the limiter's typed error instead of serving requests it cannot decide.
func TestQuickStartNoRedis(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = newAPI(context.Background(), "redis://127.0.0.1:"+strconv.Itoa(port)+"/0")
	var be *ratelimit.BackendError
	if !errors.As(err, &be) || !strings.HasPrefix(err.Error(), "ratelimit: backend ") {
		t.Fatalf("newAPI with no Redis: %v, want a *ratelimit.BackendError", err)
	}
	// The message main's comment shows.
	if !strings.Contains(err.Error(), " cannot connect to Redis: dial tcp ") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("newAPI with no Redis: %q, want it to say that the connection was refused", err)
	}
}
