package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// refusedAddr is a loopback port nothing listens on (port 1 is privileged
// and unused): connecting to it is refused at once.
const refusedAddr = "127.0.0.1:1"

// TestFailFast: against a Redis that refuses connections, a client with
// go-redis's default retries reports the failure as a timeout once its
// retries have used up the backend timeout, and a client with MaxRetries
// -1 and DialerRetries 1 reports a connection error at once, as
// WithTimeout's doc says (a backend timeout of 10 s would show as timeout).
func TestFailFast(t *testing.T) {
	ctx := context.Background()
	retrying := redis.NewClient(&redis.Options{Addr: refusedAddr, ContextTimeoutEnabled: true})
	fast := redis.NewClient(&redis.Options{Addr: refusedAddr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = retrying.Close(); _ = fast.Close() })

	retryingLimiter := mustNew(t, retrying, PerSecond(1), WithTimeout(300*time.Millisecond))
	_, err := retryingLimiter.Allow(ctx, "u")
	if got := ErrorTypeOf(err); got != ErrorTimeout {
		t.Errorf("default retries: %v (%v), want a timeout", got, err)
	}
	// Check says why, whatever the client's retries: it dials once itself.
	err = retryingLimiter.Check(ctx)
	if got := ErrorTypeOf(err); got != ErrorConnection || !strings.Contains(err.Error(), "ratelimit: check: cannot connect to Redis: dial tcp "+refusedAddr) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Check with default retries against a refused port: %v (%v), want a connection error saying refused", got, err)
	}
	l := mustNew(t, fast, PerSecond(1), WithTimeout(10*time.Second))
	_, err = l.Allow(ctx, "u")
	if got := ErrorTypeOf(err); got != ErrorConnection || !strings.Contains(err.Error(), "refused") {
		t.Errorf("MaxRetries -1, DialerRetries 1: %v (%v), want a connection error saying refused", got, err)
	}
	if err := l.Check(ctx); ErrorTypeOf(err) != ErrorConnection || !strings.Contains(err.Error(), "ratelimit: check: ping") {
		t.Errorf("Check against a refused port: %v", err)
	}
}

// TestCheck: on a real Redis Check passes and loads the functions library
// (a flushed Redis has it back, without writing any key), or the script on
// a server without functions; as an ACL user without the decision's
// commands it fails with the reason.
func TestCheck(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := mustNew(t, c, PerSecond(1)).Check(ctx); err != nil {
		t.Fatalf("Check on a healthy Redis: %v", err)
	}
	if !libraryLoaded(t, c) {
		t.Errorf("the library is not loaded after Check")
	}
	scripts := mustNew(t, c, PerSecond(1))
	scripts.e.scriptsOnly.Store(true)
	if err := scripts.Check(ctx); err != nil {
		t.Fatalf("Check with scripts: %v", err)
	}
	if ok, err := c.ScriptExists(ctx, decideScript.Hash()).Result(); err != nil || !ok[0] {
		t.Errorf("the script is not loaded after Check with scripts: %v %v", ok, err)
	}
	if n := c.DBSize(ctx).Val(); n != 0 {
		t.Errorf("Check wrote %d keys", n)
	}
	noEval := aclClient(t, srv, "no-eval", "+ping +hello")
	err := mustNew(t, noEval, PerSecond(1), WithNamespace("acl")).Check(ctx)
	var be *BackendError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("Check as a user without EVAL: %v, want NOPERM", err)
	}
}
