package main

import (
	"context"
	"strings"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

func TestRunEmbedded(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	check(t)
}

func TestRunRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("REDIS_URL", "redis://"+srv.Addr+"/0")
	check(t)
}

func check(t *testing.T) {
	t.Helper()
	var out strings.Builder
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	// miniredis runs on the wall clock here, so a token or two may refill
	// between calls: "remaining=10" matches 1000 to 1099.
	for _, want := range []string{"request 5 allowed, remaining 0", "request 6 blocked", "2000 tokens: allowed=false remaining=10", "myapp:token_bucket:{"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "backend error") {
		t.Errorf("backend error in the demo:\n%s", out.String())
	}
}
