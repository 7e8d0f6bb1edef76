package ratelimit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// withClock replaces Redis TIME with now, so that behaviour tables can move
// time on a real redis-server too. Production code never passes a clock.
func withClock(now func() time.Time) Option {
	return optionFunc(func(c *config) error { c.now = now; return nil })
}

// backend is one Redis to run a behaviour table on, with a clock the test
// moves.
type backend struct {
	name    string
	client  redis.UniversalClient
	opts    []Option              // options that bind the limiter to the clock
	advance func(d time.Duration) // moves the clock (and, on miniredis, TTLs)
	exists  func(key string) bool
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// miniBackend is miniredis driven through Redis TIME: SetTime moves TIME and
// FastForward moves TTLs (miniredis keeps the two apart).
func miniBackend(t *testing.T) backend {
	t.Helper()
	mr := miniredis.RunT(t)
	now := base
	mr.SetTime(now)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return backend{
		name:   "miniredis",
		client: c,
		// miniredis compiles every script anew; under -race on a loaded
		// machine that can pass the default 100 ms backend timeout.
		opts: []Option{WithTimeout(5 * time.Second)},
		advance: func(d time.Duration) {
			now = now.Add(d)
			mr.SetTime(now)
			mr.FastForward(d)
		},
		exists: func(key string) bool { return mr.Exists(key) },
	}
}

// realBackend is a real redis-server with the script's clock argument:
// arithmetic is checked exactly on real Redis while TTLs run on real time, so
// tables there use long periods.
func realBackend(t *testing.T) backend {
	t.Helper()
	srv := redistest.Start(t)
	c := srv.Client(t)
	var mu sync.Mutex
	now := base
	return backend{
		name:   "redis",
		client: c,
		opts: []Option{WithTimeout(5 * time.Second), withClock(func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		})},
		advance: func(d time.Duration) {
			mu.Lock()
			now = now.Add(d)
			mu.Unlock()
		},
		exists: func(key string) bool {
			n, err := c.Exists(context.Background(), key).Result()
			if err != nil {
				t.Fatalf("EXISTS: %v", err)
			}
			return n == 1
		},
	}
}

func backends(t *testing.T) []backend {
	return []backend{miniBackend(t), realBackend(t)}
}

// recorder is a Subscriber that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) OnDecision(_ context.Context, e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func mustNew(t testing.TB, c redis.UniversalClient, lim Limit, opts ...Option) *Limiter {
	t.Helper()
	l, err := New(c, lim, opts...)
	if err != nil {
		t.Fatalf("New(%v): %v", lim, err)
	}
	return l
}

func redistestStart(t *testing.T, extra ...string) *redistest.Server {
	t.Helper()
	return redistest.Start(t, extra...)
}

func redistestStartB(b *testing.B, extra ...string) *redistest.Server {
	b.Helper()
	return redistest.Start(b, extra...)
}

func redistestStartTLS(t *testing.T, extra ...string) *redistest.Server {
	t.Helper()
	return redistest.StartTLS(t, extra...)
}

// checkBadInput runs cases: each error wraps its sentinel and starts with
// "ratelimit:"; afterwards Redis holds no key and rec saw no event.
func checkBadInput(t *testing.T, c redis.UniversalClient, rec *recorder, cases []badCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want errors.Is %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "ratelimit:") {
				t.Fatalf("message %q lacks the ratelimit: prefix", err)
			}
		})
	}
	if keys := c.Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Fatalf("bad input wrote to Redis: %v", keys)
	}
	if n := len(rec.all()); n != 0 {
		t.Fatalf("bad input published %d events", n)
	}
}

// spentNow is the Result of a call that spent in Redis just now, for tests
// that refund without making the call first (bad input, a Redis that is
// down): Refund gives nothing back to a Result that spent nothing.
func spentNow() Result { return Result{Allowed: true, Reason: ReasonQuota, Time: time.Now()} }

// scriptRunner runs a script as *redis.Script does.
type scriptRunner interface {
	Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd
}

// oneDecision runs decide.lua with one decision of an algorithm, taking the
// arguments in the layout the script tables below were written in: a, b,
// c, cost, mode, now [, spent_at, keep]. Shorter lists are sent as they are,
// after the count, to be refused.
type oneDecision struct{ alg Algorithm }

func (o oneDecision) Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	return decideScript.Run(ctx, c, keys, decideArgs(o.alg, args)...)
}

// decideArgs returns decide.lua's arguments for one decision of alg given
// in the tables' layout (see oneDecision).
func decideArgs(alg Algorithm, args []any) []any {
	if len(args) < 6 {
		return append([]any{1}, args...)
	}
	a := []any{1, args[5], alg.scriptID()}
	a = append(a, args[:5]...)
	return append(a, args[6:]...)
}

// oneFunction is oneDecision as FCALL of the functions library's decision
// function, which it loads first (real Redis only): the tables check the
// function as they check the script.
type oneFunction struct{ alg Algorithm }

func (o oneFunction) Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	f := c.(interface {
		FunctionLoad(ctx context.Context, code string) *redis.StringCmd
		FCall(ctx context.Context, function string, keys []string, args ...any) *redis.Cmd
	})
	if err := f.FunctionLoad(ctx, lua.Library()).Err(); err != nil && !libraryExists(err) {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	return f.FCall(ctx, lua.DecideFunction(), keys, decideArgs(o.alg, args)...)
}

// The single-algorithm scripts of the tables: one decision each, and the
// same through the functions library.
var (
	tokenBucketScript   scriptRunner = oneDecision{TokenBucket}
	slidingWindowScript scriptRunner = oneDecision{SlidingWindow}
	slidingLogScript    scriptRunner = oneDecision{SlidingLog}
	fixedWindowScript   scriptRunner = oneDecision{FixedWindow}

	tokenBucketFunction   scriptRunner = oneFunction{TokenBucket}
	slidingWindowFunction scriptRunner = oneFunction{SlidingWindow}
	slidingLogFunction    scriptRunner = oneFunction{SlidingLog}
	fixedWindowFunction   scriptRunner = oneFunction{FixedWindow}
)

// tokenBucketState decodes a token bucket's stored state, in either of the
// forms the token bucket's load reads: a zero byte and five little-endian
// doubles (Redis's struct library: level, last, per, expiry, birth), or
// text.
func tokenBucketState(raw string) (level, last, per, expiry int64, err error) {
	if len(raw) == 41 && raw[0] == 0 {
		f := func(i int) int64 {
			return int64(math.Float64frombits(binary.LittleEndian.Uint64([]byte(raw[1+8*i : 9+8*i]))))
		}
		return f(0), f(1), f(2), f(3), nil
	}
	var born int64
	_, err = fmt.Sscanf(raw, "%d:%d:%d:%d:%d", &level, &last, &per, &expiry, &born)
	return level, last, per, expiry, err
}

// redistestTime reads Redis TIME.
func redistestTime(c redis.UniversalClient) (time.Time, error) {
	return redistest.Time(context.Background(), c)
}

// aclClient makes a Redis ACL user name on srv, allowed commands (an ACL
// rule list such as aclCommands) on the keys acl:*, and returns a client
// logged in as it.
func aclClient(t *testing.T, srv *redistest.Server, name, commands string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "on", ">s3cret-pass", "~acl:*", "resetchannels"}
	for _, f := range strings.Fields(commands) {
		args = append(args, f)
	}
	if err := srv.Client(t).Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: name, Password: "s3cret-pass", ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
