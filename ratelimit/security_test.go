package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// aclCommands is the least privilege of the O(1) algorithms (the token
// bucket's GET and SET, the windows' HMGET, HSET and PEXPIRE, and the
// multi-limit's, which uses both), for a user limited to the namespace
// "acl": FCALL and FUNCTION LOAD for the decisions' functions library,
// EVALSHA and EVAL for the other scripts (and for decisions where
// functions are out of reach: TestFunctionsACL). docs/security.md
// documents the same line.
const aclCommands = "-@all +fcall +function|load +evalsha +eval +del +time +get +set +hmget +hset +pexpire +hello +ping"

// TestACLUser runs a limiter as a Redis ACL user allowed only the commands
// above on keys of its own namespace.
func TestACLUser(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	c := aclClient(t, srv, "limiter", aclCommands)
	if err := c.ScriptFlush(ctx).Err(); err == nil {
		t.Fatal("the ACL user may run SCRIPT FLUSH: the ACL is not in force")
	}

	l := mustNew(t, c, PerMinute(3), WithNamespace("acl"), WithFailStrategy(FailClosed))
	for i, want := range []bool{true, true, true, false} {
		res, err := l.Allow(ctx, "user:1")
		if err != nil || res.Allowed != want || res.Reason != ReasonQuota {
			t.Fatalf("call %d as the ACL user: %+v %v", i, res, err)
		}
	}
	if _, err := l.Peek(ctx, "user:1"); err != nil {
		t.Fatalf("Peek: %v", err)
	}
	if err := l.Reset(ctx, "user:1"); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	// The script cache is gone (as after a restart): EVAL must be allowed.
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Allow(ctx, "user:1"); err != nil || !res.Allowed {
		t.Fatalf("after SCRIPT FLUSH: %+v %v", res, err)
	}
	// The functions are gone too: FUNCTION LOAD must be allowed, and the
	// decisions stay FCALLs.
	if err := admin.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Allow(ctx, "user:1"); err != nil || !res.Allowed || l.e.scriptsOnly.Load() || !libraryLoaded(t, admin) {
		t.Fatalf("after FUNCTION FLUSH: %+v %v, scripts only %v", res, err, l.e.scriptsOnly.Load())
	}

	// Outside its key pattern the same user is refused, and that is a
	// backend error decided by the fail strategy, not a silent allow.
	other := mustNew(t, c, PerMinute(3), WithNamespace("other"), WithFailStrategy(FailClosed))
	res, err := other.Allow(ctx, "user:1")
	var be *BackendError
	if !errors.As(err, &be) || be.Type != ErrorScript || be.Code != "NOPERM" || res.Allowed {
		t.Fatalf("outside the key pattern: %+v %v (%+v)", res, err, be)
	}
}

// TestTLS runs a limiter over TLS against a redis-server that only speaks
// TLS, with a certificate made by the test.
func TestTLS(t *testing.T) {
	srv := redistestStartTLS(t)
	ctx := context.Background()
	c := srv.Client(t) // trusts the test CA
	l := mustNew(t, c, PerMinute(2))
	for i, want := range []bool{true, true, false} {
		res, err := l.Allow(ctx, "tls-user")
		if err != nil || res.Allowed != want {
			t.Fatalf("call %d over TLS: %+v %v", i, res, err)
		}
	}
	// rediss:// from a URL speaks TLS too: against the test CA it fails
	// verification, which shows the connection was not plaintext.
	// A long timeout lets go-redis's retries end on the handshake error.
	ul, err := NewFromURL("rediss://"+srv.Addr+"/0", PerMinute(2), WithFailStrategy(FailClosed), WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	res, err := ul.Allow(ctx, "tls-user")
	if !errors.Is(err, ErrBackend) || res.Allowed || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("rediss:// with an unknown CA: %+v %v, want a certificate error", res, err)
	}
	// A plaintext client against the TLS port fails rather than leaking.
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = plain.Close() })
	pl := mustNew(t, plain, PerMinute(2), WithFailStrategy(FailClosed))
	if res, err := pl.Allow(ctx, "tls-user"); err == nil || res.Allowed {
		t.Fatalf("plaintext against TLS: %+v %v", res, err)
	}
}

// TestScriptHostileArgs calls the token bucket script directly with bad
// arguments: each gets an error reply and the stored state is untouched.
func TestScriptHostileArgs(t *testing.T) {
	for _, b := range []backend{miniBackend(t), realBackend(t)} {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := mustNew(t, b.client, PerMinute(60).WithBurst(10))
			if _, err := l.AllowN(ctx, "victim", 4); err != nil {
				t.Fatal(err)
			}
			key, _ := l.Key("victim")
			before := snapshot(t, b.client)
			good := []any{1, 1000000, 10, 1, 1, 0}
			bad := map[string]any{"x": "abc", "empty": "", "neg": -1, "frac": 1.5, "huge": "1e300",
				"inf": "inf", "nan": "nan", "hex": "0x10", "over2^53": "9007199254740993", "plus": "+5", "space": " 5", "exp": "1e3"}
			for i := range good {
				for name, v := range bad {
					args := append([]any(nil), good...)
					args[i] = v
					err := tokenBucketScript.Run(ctx, b.client, []string{key}, args...).Err()
					if err == nil {
						t.Errorf("ARGV[%d]=%v (%s) accepted", i+1, v, name)
					}
				}
			}
			// cost above burst, and a capacity beyond 2^53
			for _, args := range [][]any{{1, 1000000, 10, 11, 1, 0}, {1, 1 << 30, 1 << 30, 1, 1, 0}, {1, 1, 10, 1, 3, 0}} {
				if err := tokenBucketScript.Run(ctx, b.client, []string{key}, args...).Err(); err == nil {
					t.Errorf("args %v accepted", args)
				}
			}
			if after := snapshot(t, b.client); !equalMaps(before, after) {
				t.Fatalf("state changed by rejected calls: %v -> %v", before, after)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
