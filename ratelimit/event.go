package ratelimit

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Event describes one decision. Every call of Allow, AllowN (and each attempt
// of Wait) publishes exactly one Event, whether Redis or the fail strategy
// decided, as does every decision of a MultiLimiter or a Charger and every
// ConcurrencyLimiter.Acquire; bad input, rejected before any decision,
// publishes none. Peek, Reset, and releasing or extending a lease are not
// decisions and publish nothing; a Refund is not a decision either, and is
// published as a RefundEvent to RefundSubscribers only.
//
// Event is passed by value and holds no raw identity: Key is the Redis key,
// built from a hash of the identity. It is safe to retain.
type Event struct {
	// Namespace is the limiter's namespace (see WithNamespace).
	Namespace string
	// Algorithm is the algorithm that decided: the limiter's, the deciding
	// quota's for a MultiLimiter (Result.Quota names it), the deciding
	// charge's for a Charger, Concurrency for a lease.
	Algorithm Algorithm
	// Key is the Redis key decided on: namespace, algorithm and the hex
	// SHA-256 (or HMAC) of the identity. Fit for logs, never for a metric
	// label (it is unbounded).
	Key string
	// Cost is the cost asked for (of the deciding quota or charge, for a
	// MultiLimiter or a Charger; the lease's weight, for a
	// ConcurrencyLimiter).
	Cost int64
	// Result is what the caller got.
	Result Result
	// Start is when the Redis call began and Duration how long it took
	// (the round trip, including a NOSCRIPT reload). Both are zero when
	// no subscriber was registered at the time of the call, and when the
	// open circuit breaker decided without calling Redis (Err is then
	// of Type ErrorCircuitOpen).
	Start    time.Time
	Duration time.Duration
	// Err is the backend error (a *BackendError) when Redis failed, else
	// nil. Result.Reason then says which fail strategy decided.
	Err error
	// ServerAddr is the Redis "host:port" for a single-node client, "" when
	// unknown (Cluster, Ring, Sentinel).
	ServerAddr string
	// Shard is the shard that decided, 1 to n, for a limiter with
	// WithShards; 0 otherwise. Key is that shard's key. Fit for logs and
	// span attributes, not for a metric label.
	Shard int
}

// A Subscriber receives every decision published on a Bus.
//
// OnDecision is called synchronously, on the goroutine that made the
// decision, before Allow returns: it must be fast and must not block (wrap a
// slow sink in telemetry.Async). ctx is the caller's context, for its values
// (the span to parent a child span on, a trace id to log); it may already be
// canceled, and a subscriber must record the event anyway. A subscriber must
// not call the limiter that published the event.
type Subscriber interface {
	OnDecision(ctx context.Context, e Event)
}

// SubscriberFunc adapts a function to a Subscriber.
type SubscriberFunc func(ctx context.Context, e Event)

// OnDecision calls f(ctx, e).
func (f SubscriberFunc) OnDecision(ctx context.Context, e Event) { f(ctx, e) }

// Bus fans every published Event out to its subscribers, synchronously and in
// registration order. Publishing takes one atomic load and no allocation; the
// subscriber list is copied on write, so subscribing and unsubscribing are
// safe at any time, including from a subscriber during a publish (which then
// completes on the old list).
//
// The zero Bus is ready to use and has no subscribers. A Bus is safe for
// concurrent use.
type Bus struct {
	mu   sync.Mutex // serialises writers only
	subs atomic.Pointer[[]*subscription]
}

// subscription gives each Subscribe call its own identity: comparing the
// Subscriber interfaces themselves would panic for a SubscriberFunc.
type subscription struct{ s Subscriber }

// NewBus returns an empty Bus.
func NewBus() *Bus { return new(Bus) }

// Subscribe adds s to the bus and returns a function that removes it again.
// The returned function is idempotent. Subscribing the same Subscriber twice
// delivers every event to it twice. A nil s, also a nil pointer or func in
// the interface, is ignored.
func (b *Bus) Subscribe(s Subscriber) (unsubscribe func()) {
	if s == nil || typedNil(s) {
		return func() {}
	}
	entry := &subscription{s: s}
	b.mu.Lock()
	var next []*subscription
	if cur := b.subs.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, entry)
	b.subs.Store(&next)
	b.mu.Unlock()

	var once sync.Once
	return func() { once.Do(func() { b.remove(entry) }) }
}

func (b *Bus) remove(entry *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.subs.Load()
	if cur == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*cur), func(e *subscription) bool { return e == entry })
	if len(next) == 0 {
		b.subs.Store(nil)
		return
	}
	b.subs.Store(&next)
}

// enabled reports whether the bus has at least one subscriber. The limiter
// skips timing a call when it has none.
func (b *Bus) enabled() bool { return b.subs.Load() != nil }

// publishBreakerChange delivers c to every subscriber that implements
// BreakerSubscriber, in registration order.
func (b *Bus) publishBreakerChange(ctx context.Context, c BreakerChange) {
	cur := b.subs.Load()
	if cur == nil {
		return
	}
	for _, s := range *cur {
		if bs, ok := s.s.(BreakerSubscriber); ok {
			bs.OnBreakerChange(ctx, c)
		}
	}
}

// publishRefund delivers r to every subscriber that implements
// RefundSubscriber, in registration order.
func (b *Bus) publishRefund(ctx context.Context, r RefundEvent) {
	cur := b.subs.Load()
	if cur == nil {
		return
	}
	for _, s := range *cur {
		if rs, ok := s.s.(RefundSubscriber); ok {
			rs.OnRefundEvent(ctx, r)
		}
	}
}

// publish delivers e to every subscriber in registration order.
func (b *Bus) publish(ctx context.Context, e Event) {
	cur := b.subs.Load()
	if cur == nil {
		return
	}
	for _, s := range *cur {
		s.s.OnDecision(ctx, e)
	}
}
