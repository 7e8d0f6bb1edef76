package telemetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// changes is a BreakerSubscriber and RefundSubscriber that records the
// states changed to, and the amounts refunded.
type changes struct {
	mu sync.Mutex
	to []string
}

func (c *changes) OnDecision(context.Context, ratelimit.Event) {}

func (c *changes) OnBreakerChange(_ context.Context, ch ratelimit.BreakerChange) {
	c.mu.Lock()
	c.to = append(c.to, ch.To.String())
	c.mu.Unlock()
}

func (c *changes) OnRefundEvent(_ context.Context, r ratelimit.RefundEvent) {
	c.mu.Lock()
	c.to = append(c.to, fmt.Sprintf("refund:%d", r.Amount))
	c.mu.Unlock()
}

func (c *changes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.to, " ")
}

var (
	opened = ratelimit.BreakerChange{Namespace: "api", Algorithm: ratelimit.FixedWindow, From: ratelimit.BreakerClosed, To: ratelimit.BreakerOpen,
		Err: &ratelimit.BackendError{Type: ratelimit.ErrorTimeout, Err: context.DeadlineExceeded}}
	closedAgain = ratelimit.BreakerChange{Namespace: "api", Algorithm: ratelimit.FixedWindow, From: ratelimit.BreakerHalfOpen, To: ratelimit.BreakerClosed}
)

// TestSlogBreaker: an opening is logged at Warn with its error, a closing
// at Info, with the limiter's namespace and algorithm.
func TestSlogBreaker(t *testing.T) {
	var buf bytes.Buffer
	sub := Slog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	var bus replay
	bus = append(bus, sub)
	bus.breaker(context.Background(), opened)
	bus.breaker(context.Background(), closedAgain)
	lines := decodeLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	for i, want := range []map[string]any{
		{"level": "WARN", "msg": MsgCircuit, "namespace": "api", "algorithm": "fixed_window", "from": "closed", "to": "open", "error_type": "timeout"},
		{"level": "INFO", "msg": MsgCircuit, "namespace": "api", "algorithm": "fixed_window", "from": "half_open", "to": "closed"},
	} {
		for k, v := range want {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
	}
	if _, ok := lines[1]["error"]; ok {
		t.Errorf("a closing logged an error: %v", lines[1])
	}
}

// TestWrappersForwardBreakerChanges: Fanout, Filter, Recover and Async pass
// breaker changes and refunds to the subscribers they wrap (Filter
// unfiltered, Async in order), and a subscriber that does not want them is
// skipped.
func TestWrappersForwardBreakerChanges(t *testing.T) {
	ctx := context.Background()
	plain := ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) {})
	var fan, filtered, recovered, async changes
	a := Async(&async, 8)
	var bus replay
	bus = append(bus, Fanout(plain, &fan, nil))
	bus = append(bus, Filter(func(ratelimit.Event) bool { return false }, &filtered))
	bus = append(bus, Recover(&recovered, nil))
	bus = append(bus, Recover(panicking{}, nil))
	bus = append(bus, a)
	plainAsync := Async(plain, 1) // not a BreakerSubscriber: nothing queued
	bus = append(bus, plainAsync)
	bus.breaker(ctx, opened)
	bus.refund(ctx, ratelimit.RefundEvent{Namespace: "api", Amount: 7})
	bus.breaker(ctx, closedAgain)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := plainAsync.Close(ctx); err != nil || plainAsync.Dropped() != 0 {
		t.Fatalf("plain async: %v, %d dropped", err, plainAsync.Dropped())
	}
	for name, c := range map[string]*changes{"fanout": &fan, "filter": &filtered, "recover": &recovered, "async": &async} {
		if got := c.String(); got != "open refund:7 closed" {
			t.Errorf("%s passed %q, want \"open refund:7 closed\"", name, got)
		}
	}
	if a.Dropped() != 0 {
		t.Errorf("async dropped %d", a.Dropped())
	}
}

// TestSlogRefund: a refund is logged at the Allowed level (Debug) with
// what was given back; a failed one at the FailOpen level (Warn) with its
// error, sampled with the backend errors of decisions.
func TestSlogRefund(t *testing.T) {
	var buf bytes.Buffer
	sub := Slog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var bus replay
	bus = append(bus, sub)
	ctx := context.Background()
	ok := ratelimit.RefundEvent{Namespace: "llm", Algorithm: ratelimit.TokenBucket, Key: "rl:token_bucket:{ab}", Amount: 300,
		Result: ratelimit.Result{Allowed: true, Remaining: 900}}
	failed := ratelimit.RefundEvent{Namespace: "llm", Algorithm: ratelimit.TokenBucket, Key: "rl:token_bucket:{ab}", Amount: 300,
		Err: &ratelimit.BackendError{Type: ratelimit.ErrorConnection, Err: errors.New("connection refused")}}
	bus.refund(ctx, ok)
	bus.refund(ctx, failed)
	bus.refund(ctx, failed) // within the error interval: suppressed
	lines := decodeLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	for i, want := range []map[string]any{
		{"level": "DEBUG", "msg": MsgRefund, "namespace": "llm", "algorithm": "token_bucket", "key": "rl:token_bucket:{ab}", "amount": 300.0, "remaining": 900.0},
		{"level": "WARN", "msg": MsgRefund, "namespace": "llm", "amount": 300.0, "error_type": "connection"},
	} {
		for k, v := range want {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
	}
}

type panicking struct{}

func (panicking) OnDecision(context.Context, ratelimit.Event) {}
func (panicking) OnBreakerChange(context.Context, ratelimit.BreakerChange) {
	panic(errors.New("subscriber bug"))
}
func (panicking) OnRefundEvent(context.Context, ratelimit.RefundEvent) {
	panic(errors.New("subscriber bug"))
}

// TestNilWrapped: wrappers around a nil subscriber, or Filter with a nil
// keep, neither panic in Allow nor lose what they should pass.
func TestNilWrapped(t *testing.T) {
	ctx := context.Background()
	e := ratelimit.Event{Namespace: "api"}
	a := Async(nil, 1)
	a.OnDecision(ctx, e)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	Filter(func(ratelimit.Event) bool { return true }, nil).OnDecision(ctx, e)
	var got int
	Filter(nil, ratelimit.SubscriberFunc(func(context.Context, ratelimit.Event) { got++ })).OnDecision(ctx, e)
	if got != 1 {
		t.Errorf("Filter with a nil keep passed %d events, want 1", got)
	}
}

// replay delivers breaker changes and refunds to subscribers as a limiter's
// bus does: to those that implement BreakerSubscriber or RefundSubscriber,
// in order.
type replay []ratelimit.Subscriber

func (r replay) breaker(ctx context.Context, c ratelimit.BreakerChange) {
	for _, s := range r {
		if b, ok := s.(ratelimit.BreakerSubscriber); ok {
			b.OnBreakerChange(ctx, c)
		}
	}
}

func (r replay) refund(ctx context.Context, e ratelimit.RefundEvent) {
	for _, s := range r {
		if b, ok := s.(ratelimit.RefundSubscriber); ok {
			b.OnRefundEvent(ctx, e)
		}
	}
}
