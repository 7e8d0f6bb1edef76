package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter enforces one Limit per identity, shared by every process that uses
// the same Redis, namespace and algorithm. Each decision is one atomic Lua
// script on Redis, timed by Redis TIME, and is published on the limiter's
// Bus.
//
// Use Allow for one unit, AllowN for a weighted cost (LLM tokens, bytes, GPU
// units), Wait to block until a cost fits, Peek to read the state without
// spending, Refund to give back unused cost, and Reset to forget an
// identity. WithLimit gives a view of the limiter with another limit (a
// plan or tier) on the same state.
//
// A Limiter is safe for concurrent use. Create it once with New and share it;
// its configuration cannot change afterwards.
type Limiter struct {
	client redis.UniversalClient
	owned  bool // created by NewFromURL: Close closes the client
	cfg    config
	limit  Limit
	pol    policy
	keys   *keyer
	bus    *Bus
	script *redis.Script
	// direct is true when the client honours context deadlines on its
	// socket I/O (ContextTimeoutEnabled). Otherwise a call runs on its own
	// goroutine so that the caller can still leave on time.
	direct bool
	server string
	// The script's limit parameters (ARGV[1..3], see policy), boxed once.
	argA, argB, argC any
	// pipe shares round trips between concurrent calls (WithPipelining);
	// nil sends each call on its own.
	pipe *dispatcher
}

// New returns a Limiter enforcing limit on Redis through client: a
// *redis.Client, *redis.ClusterClient, *redis.Ring, or a failover (Sentinel)
// client. The client stays the caller's: Close does not close it.
//
// For the backend timeout (WithTimeout) to cut a call to a stalled Redis
// short, the client should be created with ContextTimeoutEnabled: true; when
// it is not, each call runs on a goroutine of its own so that the caller
// still returns on time (the goroutine ends at the client's ReadTimeout).
//
// The limit is validated for the algorithm (WithAlgorithm): the window
// algorithms reject a Burst other than 0 or Rate.
func New(client redis.UniversalClient, limit Limit, opts ...Option) (*Limiter, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.leaseTTL != 0 {
		return nil, fmt.Errorf("%w: WithLeaseTTL applies to NewConcurrency only", ErrInvalidOption)
	}
	pol, err := cfg.algorithm.prepare(limit)
	if err != nil {
		return nil, err
	}
	l := newLimiter(client, cfg, limit, pol)
	l.attachBreaker(cfg.algorithm)
	return l, nil
}

// attachBreaker makes the limiter's breaker, if any, publish its changes on
// the limiter's bus for algorithm.
func (l *Limiter) attachBreaker(algorithm Algorithm) {
	if l.cfg.breaker != nil {
		l.cfg.breaker.attach(l.bus, l.cfg.namespace, algorithm)
	}
}

// newLimiter builds a Limiter from checked parts. The concurrency and multi
// limiters use one too, for its Redis seam (exec), keys, bus and fail
// strategy.
func newLimiter(client redis.UniversalClient, cfg config, limit Limit, pol policy) *Limiter {
	bus := cfg.bus
	if bus == nil {
		bus = NewBus()
	}
	for _, s := range cfg.subs {
		bus.Subscribe(s)
	}
	l := &Limiter{
		client: client,
		cfg:    cfg,
		keys:   newKeyer(cfg.namespace, cfg.algorithm, cfg.secret),
		bus:    bus,
		script: cfg.algorithm.script(),
	}
	l.setLimit(limit, pol)
	l.direct, l.server = inspectClient(client)
	if !cfg.noPipelining {
		l.pipe = newDispatcher(l)
	}
	return l
}

func (l *Limiter) setLimit(limit Limit, pol policy) {
	l.limit, l.pol = limit, pol
	l.argA, l.argB, l.argC = pol.a, pol.b, pol.c
}

// NewFromURL connects to the Redis at rawURL (redis://[user:password@]host:port/db,
// rediss:// for TLS, unix:///path.sock) and returns a Limiter on it. The
// client is created with ContextTimeoutEnabled, and Close closes it. An
// unparsable URL gives an error wrapping ErrInvalidURL; the message never
// repeats the URL, which may hold a password.
func NewFromURL(rawURL string, limit Limit, opts ...Option) (*Limiter, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error // it repeats the URL
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	o.ContextTimeoutEnabled = true
	client := redis.NewClient(o)
	l, err := New(client, limit, opts...)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	l.owned = true
	return l, nil
}

// nilClient reports whether c is nil, or holds a nil pointer: a
// *redis.Client variable that was never assigned is a non-nil interface,
// and would panic on first use (New itself reads its options).
func nilClient(c redis.UniversalClient) bool {
	return c == nil || typedNil(c)
}

// typedNil reports whether v is a nil pointer or func inside a non-nil
// interface, such as a (*redis.Client)(nil) or a SubscriberFunc(nil): not
// == nil, but it panics when called.
func typedNil(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// inspectClient reports whether c applies context deadlines to its I/O, and
// the server address when there is a single one.
func inspectClient(c redis.UniversalClient) (direct bool, server string) {
	switch c := c.(type) {
	case *redis.Client:
		o := c.Options()
		return o.ContextTimeoutEnabled, o.Addr
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled, ""
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled, ""
	}
	return false, ""
}

// Close closes the Redis client if NewFromURL created it, and does nothing
// otherwise.
func (l *Limiter) Close() error {
	if l.owned {
		return l.client.Close()
	}
	return nil
}

// Limit returns the limit the Limiter enforces.
func (l *Limiter) Limit() Limit { return l.limit }

// Namespace returns the limiter's namespace.
func (l *Limiter) Namespace() string { return l.cfg.namespace }

// Algorithm returns the limiter's algorithm.
func (l *Limiter) Algorithm() Algorithm { return l.cfg.algorithm }

// FailStrategy returns what the limiter decides when Redis fails.
func (l *Limiter) FailStrategy() FailStrategy { return l.cfg.fail }

// Bus returns the bus the limiter publishes its decisions on.
func (l *Limiter) Bus() *Bus { return l.bus }

// Subscribe is shorthand for l.Bus().Subscribe(s).
func (l *Limiter) Subscribe(s Subscriber) (unsubscribe func()) { return l.bus.Subscribe(s) }

// Key returns the Redis key that holds identity's state, for operators and
// tests. It is the hashed form; the identity itself is never stored. The
// SlidingLog algorithm keeps a second key beside it, Key + ":meta".
func (l *Limiter) Key(identity string) (string, error) { return l.keys.key(identity) }

// scriptKeys returns the KEYS of key's script: key alone, or key and its
// meta key (one hash tag, so one Cluster slot).
func (l *Limiter) scriptKeys(key string) []string {
	if l.cfg.algorithm.twoKeys() {
		return []string{key, key + metaSuffix}
	}
	return []string{key}
}

// Allow is shorthand for AllowN(ctx, identity, 1).
func (l *Limiter) Allow(ctx context.Context, identity string) (Result, error) {
	return l.AllowN(ctx, identity, 1)
}

// AllowN reports whether identity may spend cost now, and spends it if so.
// A denied call spends nothing.
//
// The error is nil for every decision Redis made, allowed or not. It wraps
// ErrInvalidCost or ErrInvalidIdentity for bad input (then nothing is
// decided, nothing published, and the Result is zero), and is a
// *BackendError when Redis failed: the Result is then the one the
// FailStrategy chose, and the decision is published with the error.
//
// A cost of 0 spends nothing and is always allowed; it returns the current
// state like Peek, but is published as a decision.
func (l *Limiter) AllowN(ctx context.Context, identity string, cost int64) (Result, error) {
	if err := l.checkCost(cost); err != nil {
		return Result{}, err
	}
	key, err := l.keys.key(identity)
	if err != nil {
		return Result{}, err
	}
	return l.decide(ctx, key, cost, true)
}

// Peek returns what Allow would decide now, without spending anything and
// without publishing an event. On a backend failure the Result is the fail
// strategy's, as for AllowN.
func (l *Limiter) Peek(ctx context.Context, identity string) (Result, error) {
	key, err := l.keys.key(identity)
	if err != nil {
		return Result{}, err
	}
	return l.decide(ctx, key, 1, false)
}

// Reset forgets identity's state: its next call starts with a full burst.
func (l *Limiter) Reset(ctx context.Context, identity string) error {
	key, err := l.keys.key(identity)
	if err != nil {
		return err
	}
	return l.del(ctx, l.scriptKeys(key))
}

// del deletes keys within the backend timeout, also with a client that
// ignores context deadlines (whose call then finishes on a goroutine of its
// own, as runGuarded's scripts do).
func (l *Limiter) del(ctx context.Context, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
	defer cancel()
	if l.direct {
		if err := l.client.Del(ctx, keys...).Err(); err != nil {
			return newBackendError(err)
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- l.client.Del(ctx, keys...).Err() }()
	select {
	case err := <-done:
		if err != nil {
			return newBackendError(err)
		}
		return nil
	case <-ctx.Done():
		return newBackendError(ctxErr(ctx))
	}
}

// Wait blocks until identity may spend cost, spends it and returns the
// allowing Result, or returns early:
//   - with an error wrapping ErrInvalidCost at once, for a cost above the
//     burst (it could never be allowed);
//   - with ErrWouldExceedDeadline at once, when ctx's deadline comes before
//     the cost could be allowed;
//   - with ctx's error when ctx ends while waiting;
//   - with the *BackendError when Redis fails (the Result, allowed or not,
//     is the fail strategy's).
//
// Each attempt is a decision and is published.
func (l *Limiter) Wait(ctx context.Context, identity string, cost int64) (Result, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		res, err := l.AllowN(ctx, identity, cost)
		if err != nil || res.Allowed {
			return res, err
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < res.RetryAfter {
			return res, fmt.Errorf("%w: cost %d needs %v more", ErrWouldExceedDeadline, cost, res.RetryAfter)
		}
		if timer == nil {
			timer = time.NewTimer(res.RetryAfter)
		} else {
			timer.Reset(res.RetryAfter)
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("ratelimit: wait: %w", ctxErr(ctx))
		case <-timer.C:
		}
	}
}

func (l *Limiter) checkCost(cost int64) error {
	if cost < 0 {
		return fmt.Errorf("%w: cost %d is negative", ErrInvalidCost, cost)
	}
	if cost > l.pol.capacity {
		return fmt.Errorf("%w: cost %d is above the burst %d and could never be allowed", ErrInvalidCost, cost, l.pol.capacity)
	}
	return nil
}

// decide runs one decision for key. apply false makes it a dry run (Peek),
// which is not published.
func (l *Limiter) decide(ctx context.Context, key string, cost int64, apply bool) (Result, error) {
	publish := apply && l.bus.Enabled()
	var start time.Time
	if publish {
		start = time.Now()
	}
	mode := modePeek
	if apply {
		mode = modeSpend
	}
	res, err := l.eval(ctx, key, cost, mode)
	if err != nil {
		res = l.failResult(ctx)
	} else if apply {
		res = l.shadow(res)
	}
	if publish {
		l.publish(ctx, l.cfg.algorithm, key, cost, res, start, err)
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// shadow applies shadow mode to a decision Redis made.
func (l *Limiter) shadow(res Result) Result {
	if l.cfg.shadow && !res.Allowed {
		res.Allowed, res.Reason = true, ReasonShadow
	}
	return res
}

// publish sends one decision to the bus; start is when its Redis call began.
func (l *Limiter) publish(ctx context.Context, alg Algorithm, key string, cost int64, res Result, start time.Time, err *BackendError) {
	ev := Event{
		Namespace:  l.cfg.namespace,
		Algorithm:  alg,
		Key:        key,
		Cost:       cost,
		Result:     res,
		ServerAddr: l.server,
	}
	ev.Start, ev.Duration, ev.Err = callTiming(start, err)
	l.bus.Publish(ctx, ev)
}

// callTiming returns the Start, Duration and Err of an event about a Redis
// call that began at start and failed with err (nil if it did not). A call
// the open circuit breaker skipped has no time; a nil *BackendError never
// becomes a non-nil error.
func callTiming(start time.Time, err *BackendError) (time.Time, time.Duration, error) {
	switch {
	case err == nil:
		return start, time.Since(start), nil
	case err.Type == ErrorCircuitOpen:
		return time.Time{}, 0, err
	default:
		return start, time.Since(start), err
	}
}

// failResult is the Result of a call Redis did not decide: a denial when the
// caller's context has ended (the caller gave up; that is no outage, and
// FailOpen must not let it through), else the fail strategy's.
func (l *Limiter) failResult(ctx context.Context) Result {
	switch {
	case ctx.Err() != nil:
		return Result{Allowed: false, Reason: ReasonCanceled, Limit: l.limit}
	case l.cfg.fail == FailClosed:
		return Result{Allowed: false, Reason: ReasonFailClosed, Limit: l.limit}
	}
	return Result{Allowed: true, Reason: ReasonFailOpen, Limit: l.limit}
}

// Script modes (ARGV[5] of every single-algorithm script).
const (
	modePeek   = 0 // report only
	modeSpend  = 1 // spend the cost when allowed
	modeRefund = 2 // give the cost back
)

// nowArg is the script's clock argument: 0 (Redis TIME) except in tests.
func (l *Limiter) nowArg() int64 {
	if l.cfg.now != nil {
		return l.cfg.now().UnixMicro()
	}
	return 0
}

// eval runs one decision of the limiter's algorithm for key and decodes the
// reply.
func (l *Limiter) eval(ctx context.Context, key string, cost int64, mode int) (Result, *BackendError) {
	reply, err := l.exec(ctx, l.script, l.scriptKeys(key), l.argA, l.argB, l.argC, cost, mode, l.nowArg())
	if err != nil {
		return Result{}, err
	}
	return l.decode(reply)
}

// decode turns the reply of a single-algorithm script into a Result.
func (l *Limiter) decode(reply []int64) (Result, *BackendError) {
	if len(reply) != 5 {
		return Result{}, newBackendError(fmt.Errorf("ratelimit: unexpected script reply of %d integers", len(reply)))
	}
	return Result{
		Allowed:    reply[0] == 1,
		Reason:     ReasonQuota,
		Limit:      l.limit,
		Remaining:  reply[1],
		RetryAfter: durationUS(reply[2]),
		ResetAfter: durationUS(reply[3]),
		Time:       time.UnixMicro(reply[4]),
	}, nil
}
