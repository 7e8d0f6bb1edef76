package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/testkit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// newLimiter returns a limiter of one a second on a fresh miniredis, and
// the miniredis.
func newLimiter(t *testing.T, opts ...ratelimit.Option) (*ratelimit.Limiter, *miniredis.Miniredis) {
	return testkit.MiniLimiter(t, ratelimit.PerSecond(1), opts...)
}

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad JSON log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestSlogLevelsAndAttrs(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	open, mr := newLimiter(t, ratelimit.WithSubscribers(Slog(logger)), ratelimit.WithNamespace("api"))
	c2 := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer c2.Close()
	closed, err := ratelimit.New(c2, ratelimit.PerSecond(1),
		ratelimit.WithSubscribers(Slog(logger)), ratelimit.WithFailStrategy(ratelimit.FailClosed))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const id = "alice@example.com"
	_, _ = open.Allow(ctx, id) // allowed
	_, _ = open.Allow(ctx, id) // blocked
	mr.Close()
	_, _ = open.Allow(ctx, id)   // fail open
	_, _ = closed.Allow(ctx, id) // fail closed

	if strings.Contains(buf.String(), id) {
		t.Fatalf("raw identity in the log: %s", buf.String())
	}
	lines := decodeLines(t, &buf)
	want := []struct{ level, msg, reason string }{
		{"DEBUG", MsgAllowed, "quota"},
		{"INFO", MsgBlocked, "quota"},
		{"WARN", MsgBackend, "fail_open"},
		{"ERROR", MsgBackend, "fail_closed"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	key, _ := open.Key(id)
	for i, w := range want {
		l := lines[i]
		if l["level"] != w.level || l["msg"] != w.msg || l["reason"] != w.reason {
			t.Errorf("line %d: %v, want %+v", i, l, w)
		}
		if i < 3 && (l["key"] != key || l["namespace"] != "api" || l["algorithm"] != "token_bucket" || l["cost"] != 1.0) {
			t.Errorf("line %d attrs: %v", i, l)
		}
		if i >= 2 && (l["error"] == nil || l["error_type"] == "" || l["error_type"] == nil) {
			t.Errorf("line %d lacks error attrs: %v", i, l)
		}
	}
	if lines[1]["retry_after"] != "1s" || lines[1]["duration"] == nil {
		t.Errorf("retry_after %v, duration %v, want 1s and a duration with its unit", lines[1]["retry_after"], lines[1]["duration"])
	}
}

func TestSlogDisabledLevelAllocs(t *testing.T) {
	logger := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sub := Slog(logger)
	ev := ratelimit.Event{Namespace: "ns", Key: "k", Cost: 1, Result: ratelimit.Result{Allowed: true}}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { sub.OnDecision(ctx, ev) }); n != 0 {
		t.Fatalf("an allowed decision at a disabled Debug level allocates %v times", n)
	}
}

func TestSlogToFansOut(t *testing.T) {
	var jsonBuf, textBuf bytes.Buffer
	sub := SlogTo([]slog.Handler{
		slog.NewJSONHandler(&jsonBuf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewTextHandler(&textBuf, &slog.HandlerOptions{Level: slog.LevelInfo}),
	})
	ctx := context.Background()
	sub.OnDecision(ctx, ratelimit.Event{Result: ratelimit.Result{Allowed: true}})
	sub.OnDecision(ctx, ratelimit.Event{Result: ratelimit.Result{Allowed: false}})
	if n := strings.Count(jsonBuf.String(), "\n"); n != 2 {
		t.Errorf("JSON handler (Debug) got %d lines, want 2", n)
	}
	if n := strings.Count(textBuf.String(), "\n"); n != 1 || !strings.Contains(textBuf.String(), MsgBlocked) {
		t.Errorf("text handler (Info) got %q, want the one block", textBuf.String())
	}
}

// gate is a subscriber that signals each event it starts on and then waits
// for a release.
type gate struct {
	started chan int64
	release chan struct{}
	got     []int64
}

func (g *gate) OnDecision(_ context.Context, e ratelimit.Event) {
	g.started <- e.Cost
	<-g.release
	g.got = append(g.got, e.Cost)
}

func TestAsyncDropsAndDrains(t *testing.T) {
	g := &gate{started: make(chan int64, 100), release: make(chan struct{})}
	var dropped []int64
	a := Async(g, 2, WithDropped(ratelimit.SubscriberFunc(func(_ context.Context, e ratelimit.Event) {
		dropped = append(dropped, e.Cost)
	})))
	ctx := context.Background()
	a.OnDecision(ctx, ratelimit.Event{Cost: 1})
	if c := <-g.started; c != 1 { // the worker holds event 1
		t.Fatalf("worker started on %d", c)
	}
	a.OnDecision(ctx, ratelimit.Event{Cost: 2}) // queued
	a.OnDecision(ctx, ratelimit.Event{Cost: 3}) // queued
	a.OnDecision(ctx, ratelimit.Event{Cost: 4}) // queue full: dropped
	if a.Dropped() != 1 || len(dropped) != 1 || dropped[0] != 4 {
		t.Fatalf("dropped %d %v, want event 4", a.Dropped(), dropped)
	}
	// Close must wait for the queue; with the worker held it cannot finish.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := a.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a held worker: %v", err)
	}
	a.OnDecision(ctx, ratelimit.Event{Cost: 5}) // after Close: dropped
	close(g.release)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(g.got) != 3 || g.got[0] != 1 || g.got[1] != 2 || g.got[2] != 3 {
		t.Fatalf("delivered %v, want [1 2 3] in order", g.got)
	}
	if a.Dropped() != 2 {
		t.Fatalf("Dropped %d, want 2", a.Dropped())
	}
}

func TestFanoutFilterRecover(t *testing.T) {
	var got []string
	rec := func(name string) ratelimit.Subscriber {
		return ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) { got = append(got, name) })
	}
	blockedOnly := Filter(func(e ratelimit.Event) bool { return !e.Result.Allowed }, rec("blocked"))
	var recovered []any
	panicky := Recover(ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) { panic("boom") }),
		func(r any, _ ratelimit.Event) { recovered = append(recovered, r) })
	f := Fanout(rec("a"), nil, Fanout(rec("b"), blockedOnly), panicky, Recover(panicky, nil))
	if n := len(f.(fanout)); n != 5 {
		t.Fatalf("flattened to %d subscribers, want 5", n)
	}
	ctx := context.Background()
	f.OnDecision(ctx, ratelimit.Event{Result: ratelimit.Result{Allowed: true}})
	f.OnDecision(ctx, ratelimit.Event{Result: ratelimit.Result{Allowed: false}})
	if want := "a b a b blocked"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, " "), want)
	}
	if len(recovered) != 4 || recovered[0] != "boom" {
		t.Fatalf("recovered %v", recovered)
	}
}

func TestSlogQuota(t *testing.T) {
	var buf bytes.Buffer
	sub := Slog(slog.New(slog.NewJSONHandler(&buf, nil)))
	sub.OnDecision(context.Background(), ratelimit.Event{Key: "a", Result: ratelimit.Result{Allowed: false, Quota: "daily"}})
	sub.OnDecision(context.Background(), ratelimit.Event{Key: "b", Result: ratelimit.Result{Allowed: false}})
	lines := decodeLines(t, &buf)
	if len(lines) != 2 || lines[0]["quota"] != "daily" {
		t.Fatalf("lines %v, want the deciding quota on the first", lines)
	}
	if _, ok := lines[1]["quota"]; ok {
		t.Fatalf("quota attribute on a single-limit decision: %v", lines[1])
	}
}

// TestSlogErrorInterval: during an outage, one backend-error line per
// interval per namespace and algorithm, the next one counting the lines it
// stands for; decisions Redis made are never sampled.
func TestSlogErrorInterval(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sub := Slog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), WithBlockInterval(0)).(*slogSubscriber)
	sub.now = func() time.Time { return now }
	fail := func(ns string) ratelimit.Event {
		return ratelimit.Event{Namespace: ns, Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen},
			Err: &ratelimit.BackendError{Type: ratelimit.ErrorTimeout, Err: context.DeadlineExceeded}}
	}
	ctx := context.Background()
	for range 5 {
		sub.OnDecision(ctx, fail("api"))
		sub.OnDecision(ctx, ratelimit.Event{Namespace: "api", Result: ratelimit.Result{Allowed: false}})
	}
	sub.OnDecision(ctx, fail("auth")) // another namespace has its own gate
	now = now.Add(DefaultErrorInterval)
	sub.OnDecision(ctx, fail("api"))
	var errs, blocks int
	var suppressed []any
	for _, l := range decodeLines(t, &buf) {
		switch l["msg"] {
		case MsgBackend:
			errs++
			suppressed = append(suppressed, l["suppressed"])
		case MsgBlocked:
			blocks++
		}
	}
	if errs != 3 || blocks != 5 {
		t.Fatalf("%d error lines and %d block lines, want 3 and 5:\n%s", errs, blocks, buf.String())
	}
	if suppressed[0] != nil || suppressed[1] != nil || suppressed[2] != 4.0 {
		t.Fatalf("suppressed counts %v, want [<nil> <nil> 4]", suppressed)
	}

	buf.Reset()
	every := Slog(slog.New(slog.NewJSONHandler(&buf, nil)), WithErrorInterval(0))
	for range 3 {
		every.OnDecision(ctx, fail("api"))
	}
	if n := len(decodeLines(t, &buf)); n != 3 {
		t.Fatalf("WithErrorInterval(0) logged %d of 3 errors", n)
	}
}

// TestSlogShadow: a decision shadow mode let through though the limit
// would have blocked it is logged at the Blocked level (Info), as
// MsgShadow with its retry_after, so that a rollout shows what enforcing
// would block.
func TestSlogShadow(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	l, _ := newLimiter(t, ratelimit.WithSubscribers(Slog(logger)), ratelimit.WithShadow())
	ctx := context.Background()
	for range 2 {
		if res, err := l.Allow(ctx, "u"); err != nil || !res.Allowed {
			t.Fatalf("shadow mode: %+v %v", res, err)
		}
	}
	lines := decodeLines(t, &buf)
	if len(lines) != 1 {
		t.Fatalf("%d lines at Info, want the one shadow block:\n%s", len(lines), buf.String())
	}
	if l := lines[0]; l["level"] != "INFO" || l["msg"] != MsgShadow || l["reason"] != "shadow" || l["allowed"] != true || l["retry_after"] == 0.0 {
		t.Errorf("shadow line %v", l)
	}
}

// TestSlogBlockInterval: a key hammering over its limit is logged once an
// interval, the next line counting the lines it stands for; another key has
// its own gate; allowed decisions are never sampled; the context's
// attributes (WithContextAttrs) go on every line.
func TestSlogBlockInterval(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	route := func(ctx context.Context) []slog.Attr { return []slog.Attr{slog.String("route", "GET /api")} }
	sub := Slog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), WithContextAttrs(route)).(*slogSubscriber)
	sub.now = func() time.Time { return now }
	ctx := context.Background()
	blocked := func(key string) ratelimit.Event {
		return ratelimit.Event{Key: key, Result: ratelimit.Result{Allowed: false, Reason: ratelimit.ReasonQuota, RetryAfter: 784 * time.Millisecond}}
	}
	for range 20 {
		sub.OnDecision(ctx, blocked("abuser"))
		sub.OnDecision(ctx, ratelimit.Event{Key: "abuser", Result: ratelimit.Result{Allowed: true}})
	}
	sub.OnDecision(ctx, blocked("other"))
	now = now.Add(DefaultBlockInterval)
	sub.OnDecision(ctx, blocked("abuser"))
	var blocks, allowed int
	var suppressed []any
	for _, l := range decodeLines(t, &buf) {
		if l["route"] != "GET /api" {
			t.Errorf("line without the context's route: %v", l)
		}
		switch l["msg"] {
		case MsgBlocked:
			blocks++
			if l["key"] == "abuser" {
				suppressed = append(suppressed, l["suppressed"])
			}
			if l["retry_after"] != "784ms" {
				t.Errorf("retry_after %v, want 784ms", l["retry_after"])
			}
		case MsgAllowed:
			allowed++
		}
	}
	if blocks != 3 || allowed != 20 {
		t.Fatalf("%d blocked and %d allowed lines, want 3 and 20:\n%s", blocks, allowed, buf.String())
	}
	if len(suppressed) != 2 || suppressed[0] != nil || suppressed[1] != 19.0 {
		t.Fatalf("suppressed counts of the abuser %v, want [<nil> 19]", suppressed)
	}
}
