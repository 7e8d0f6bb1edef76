package ratelimit

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestBusOrderAndUnsubscribe(t *testing.T) {
	var b Bus // the zero Bus works
	var got []string
	mk := func(name string) Subscriber {
		return SubscriberFunc(func(context.Context, Event) { got = append(got, name) })
	}
	unA := b.Subscribe(mk("a"))
	unB := b.Subscribe(mk("b"))
	f := mk("c")
	unC1 := b.Subscribe(f)
	b.Subscribe(f) // the same func twice: two subscriptions
	b.Subscribe(nil)
	if b.subscribers() != 4 || !b.enabled() {
		t.Fatalf("Len %d Enabled %v, want 4 true", b.subscribers(), b.enabled())
	}
	b.publish(context.Background(), Event{})
	if want := "abcc"; join(got) != want {
		t.Fatalf("order %q, want %q", join(got), want)
	}
	got = nil
	unB()
	unB() // idempotent
	unC1()
	b.publish(context.Background(), Event{})
	if want := "ac"; join(got) != want {
		t.Fatalf("after unsubscribe: %q, want %q", join(got), want)
	}
	unA()
	if b.subscribers() != 1 {
		t.Fatalf("Len %d, want 1", b.subscribers())
	}
}

func join(s []string) string {
	out := ""
	for _, x := range s {
		out += x
	}
	return out
}

// TestBusSubscribeDuringPublish: a subscriber that subscribes and
// unsubscribes while being called does not disturb the publish in progress.
func TestBusSubscribeDuringPublish(t *testing.T) {
	var b Bus
	calls := 0
	var unsub func()
	unsub = b.Subscribe(SubscriberFunc(func(context.Context, Event) {
		calls++
		b.Subscribe(SubscriberFunc(func(context.Context, Event) { calls += 100 }))
		unsub()
	}))
	b.publish(context.Background(), Event{})
	if calls != 1 {
		t.Fatalf("first publish made %d calls, want 1 (the snapshot)", calls)
	}
	b.publish(context.Background(), Event{})
	if calls != 101 {
		t.Fatalf("second publish: %d, want 101", calls)
	}
}

// TestBusConcurrent runs publishers against subscribers coming and going;
// it is meant for -race.
func TestBusConcurrent(t *testing.T) {
	var b Bus
	var mu sync.Mutex
	seen := 0
	b.Subscribe(SubscriberFunc(func(context.Context, Event) { mu.Lock(); seen++; mu.Unlock() }))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 1000 {
				b.publish(context.Background(), Event{Cost: 1})
			}
		}()
		go func() {
			defer wg.Done()
			for range 100 {
				un := b.Subscribe(SubscriberFunc(func(context.Context, Event) {}))
				un()
			}
		}()
	}
	wg.Wait()
	if seen != 4000 {
		t.Fatalf("the permanent subscriber saw %d events, want 4000", seen)
	}
}

func TestBusPublishAllocs(t *testing.T) {
	var b Bus
	ev := Event{Namespace: "ns", Key: "ns:token_bucket:{x}", Cost: 1}
	ctx := context.Background()
	for subs := 0; subs <= 3; subs++ {
		if subs > 0 {
			b.Subscribe(SubscriberFunc(func(_ context.Context, e Event) { _ = e.Cost }))
		}
		if n := testing.AllocsPerRun(100, func() { b.publish(ctx, ev) }); n != 0 {
			t.Errorf("Publish with %d subscribers: %v allocs, want 0", subs, n)
		}
	}
}

func TestHooks(t *testing.T) {
	var log []string
	h := Hooks{
		OnAllow: func(context.Context, Event) { log = append(log, "allow") },
		OnBlock: func(context.Context, Event) { log = append(log, "block") },
		OnError: func(context.Context, Event) { log = append(log, "error") },
	}
	ctx := context.Background()
	h.OnDecision(ctx, Event{Result: Result{Allowed: true}})
	h.OnDecision(ctx, Event{Result: Result{Allowed: false}})
	h.OnDecision(ctx, Event{Result: Result{Allowed: true, Reason: ReasonFailOpen}, Err: &BackendError{Err: context.DeadlineExceeded}})
	h.OnDecision(ctx, Event{Result: Result{Allowed: false, Reason: ReasonFailClosed}, Err: &BackendError{Err: context.DeadlineExceeded}})
	Hooks{}.OnDecision(ctx, Event{}) // nil callbacks are skipped
	if want := "allow block error allow error block"; joinSpace(log) != want {
		t.Fatalf("hooks called %q, want %q", joinSpace(log), want)
	}
}

func joinSpace(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

// TestEventsFromLimiter: one event per decision with the fields subscribers
// rely on; Peek and bad input publish nothing.
func TestEventsFromLimiter(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	rec := &recorder{}
	l := mustNew(t, b.client, PerSecond(2), WithNamespace("ev"), WithSubscribers(rec))
	for range 3 {
		if _, err := l.Allow(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Peek(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	_, _ = l.AllowN(ctx, "alice", -1)
	events := rec.all()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	key, _ := l.Key("alice")
	for i, e := range events {
		if e.Namespace != "ev" || e.Algorithm != TokenBucket || e.Key != key || e.Cost != 1 || e.Err != nil ||
			e.Start.IsZero() || e.Duration <= 0 || e.ServerAddr != b.client.(*redis.Client).Options().Addr {
			t.Errorf("event %d: %+v", i, e)
		}
		if wantAllowed := i < 2; e.Result.Allowed != wantAllowed {
			t.Errorf("event %d allowed %v, want %v", i, e.Result.Allowed, wantAllowed)
		}
	}
}

// TestSubscribeTypedNil: a nil pointer or func in the Subscriber interface
// is ignored by Subscribe, as a nil one is, rather than panicking at the
// next publish.
func TestSubscribeTypedNil(t *testing.T) {
	b := NewBus()
	b.Subscribe(SubscriberFunc(nil))
	b.Subscribe((*recorder)(nil))
	if b.subscribers() != 0 {
		t.Fatalf("%d subscriptions of nil subscribers", b.subscribers())
	}
	b.publish(context.Background(), Event{})
}

// subscribers returns the number of subscriptions.
func (b *Bus) subscribers() int {
	if cur := b.subs.Load(); cur != nil {
		return len(*cur)
	}
	return 0
}
