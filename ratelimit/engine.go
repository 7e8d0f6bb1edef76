package ratelimit

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// engine is what every limiter stands on: the Redis client, the options,
// the bus, the breaker and the dispatcher, and the one decision path
// (run a call, let the fail strategy or shadow mode decide, publish). The
// limiter types only build calls and read replies; views of a limiter
// (WithLimit, WithLimits, WithMax) share its engine.
type engine struct {
	client redis.UniversalClient
	owned  bool // created by NewFromURL: close closes the client
	cfg    config
	bus    *Bus
	// direct is true when the client honours context deadlines on its
	// socket I/O (ContextTimeoutEnabled). Otherwise a call runs on its own
	// goroutine so that the caller can still leave on time.
	direct bool
	server string // "host:port" of a single-node client, else ""
	group  groupFunc
	// pipe shares round trips between concurrent calls (WithPipelining);
	// nil sends each call on its own.
	pipe *dispatcher
	// denials remembers recent denials (WithDenyCache); nil: off.
	denials *denyCache
	// scriptsOnly is set once the server has shown that it cannot run
	// functions (functions.go): decisions go as EVALSHA from then on.
	scriptsOnly atomic.Bool
}

// newEngine builds the engine of a limiter whose events carry algs.
func newEngine(client redis.UniversalClient, cfg config, algs ...Algorithm) *engine {
	bus := cfg.bus
	if bus == nil {
		bus = NewBus()
	}
	for _, s := range cfg.subs {
		bus.Subscribe(s)
	}
	e := &engine{client: client, cfg: cfg, bus: bus}
	e.direct, e.server, e.group = inspectClient(client)
	if !cfg.noPipelining {
		e.pipe = newDispatcher(e)
	}
	if cfg.denyCache > 0 {
		e.denials = newDenyCache(cfg.denyCache)
	}
	if cfg.breaker != nil {
		for _, a := range algs {
			cfg.breaker.attach(bus, cfg.namespace, a)
		}
	}
	return e
}

// inspectClient reports whether c applies context deadlines to its I/O, the
// server address when there is a single one, and how decisions must be
// grouped so that one script call stays on one node (see groupFunc).
func inspectClient(c redis.UniversalClient) (direct bool, server string, group groupFunc) {
	switch c := c.(type) {
	case *redis.Client:
		o := c.Options()
		return o.ContextTimeoutEnabled, o.Addr, oneGroup
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled, "", bySlot
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled, "", byTag
	}
	return false, "", byTag
}

func (e *engine) close() error {
	if e.owned {
		return e.client.Close()
	}
	return nil
}

// nowArg is the scripts' clock argument: 0 (Redis TIME) except in tests.
func (e *engine) nowArg() int64 {
	if e.cfg.now != nil {
		return e.cfg.now().UnixMicro()
	}
	return 0
}

// localNow is this process's clock, for what the library keeps in memory
// (the deny cache): time.Now, or the scripts' clock in tests.
func (e *engine) localNow() time.Time {
	if e.cfg.now != nil {
		return e.cfg.now()
	}
	return time.Now()
}

// startTimer returns when a call begins, or the zero time when no one is
// listening: then nothing is timed and nothing published.
func (e *engine) startTimer() time.Time {
	if e.bus.enabled() {
		return time.Now()
	}
	return time.Time{}
}

// decided names a decision for its event, and the limit a Result carries
// when Redis did not decide.
type decided struct {
	alg    Algorithm
	key    string
	cost   int64
	limit  Limit
	shard  int  // the shard that decided (Event.Shard)
	cached bool // answered by the deny cache: published untimed
}

// finish is the one tail of every decision: a call Redis answered keeps
// Redis's Result (with shadow mode applied); one it did not gets the fail
// strategy's, or a denial when the caller gave up; then the decision is
// published, when start says someone listens. The error is nil or the
// *BackendError, never a typed nil.
func (e *engine) finish(ctx context.Context, d decided, start time.Time, res Result, berr *BackendError) (Result, error) {
	if berr != nil {
		res = e.failResult(ctx, d.limit)
	} else if e.cfg.shadow && !res.Allowed {
		res.Allowed, res.Reason = true, ReasonShadow
	}
	if !start.IsZero() || d.cached && e.bus.enabled() {
		ev := Event{Namespace: e.cfg.namespace, Algorithm: d.alg, Key: d.key, Cost: d.cost, Result: res, ServerAddr: e.server, Shard: d.shard}
		if !d.cached {
			ev.Start, ev.Duration, ev.Err = callTiming(start, berr)
		}
		e.bus.publish(ctx, ev)
	}
	if berr != nil {
		return res, berr
	}
	return res, nil
}

// callerEnded reports whether the caller's context has ended, or its
// deadline has passed: a backend timer set to that deadline (or a socket
// deadline) can fire before the context's own timer marks it done, and the
// caller's deadline must not become a Redis failure for the fail strategy.
func callerEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// failResult is the Result of a call Redis did not decide: a denial when the
// caller's context has ended (the caller gave up; that is no outage, and
// FailOpen must not let it through), else the fail strategy's.
func (e *engine) failResult(ctx context.Context, limit Limit) Result {
	switch {
	case callerEnded(ctx):
		return Result{Allowed: false, Reason: ReasonCanceled, Limit: limit}
	case e.cfg.fail == FailClosed:
		return Result{Allowed: false, Reason: ReasonFailClosed, Limit: limit}
	}
	return Result{Allowed: true, Reason: ReasonFailOpen, Limit: limit}
}

// publishRefund publishes a refund of amount to d's key; start is when its
// Redis call began (zero: no one listens).
func (e *engine) publishRefund(ctx context.Context, alg Algorithm, key string, amount int64, start time.Time, res Result, berr *BackendError) {
	if start.IsZero() {
		return
	}
	r := RefundEvent{Namespace: e.cfg.namespace, Algorithm: alg, Key: key, Amount: amount, Result: res, ServerAddr: e.server}
	r.Start, r.Duration, r.Err = callTiming(start, berr)
	e.bus.publishRefund(ctx, r)
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

// del deletes keys within the backend timeout, also with a client that
// ignores context deadlines.
func (e *engine) del(ctx context.Context, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	err := e.bounded(ctx, func(ctx context.Context) error { return e.client.Del(ctx, keys...).Err() })
	if err != nil {
		return newBackendError(err)
	}
	return nil
}

// bounded runs f under ctx: on the caller's goroutine when the client
// honours context deadlines, else on one of its own, so that the caller
// still leaves when ctx ends (the call itself ends at the client's
// ReadTimeout).
func (e *engine) bounded(ctx context.Context, f func(ctx context.Context) error) error {
	if e.direct {
		return f(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctxErr(ctx)
	}
}

// guard runs call through the breaker, if any: it answers at once with
// ErrorCircuitOpen while the breaker is open, and tells it how the call
// went. A caller that has given up already is not sent to Redis at all.
func (e *engine) guard(ctx context.Context, call func() *BackendError) *BackendError {
	if ctx.Err() != nil {
		return newBackendError(ctxErr(ctx))
	}
	b := e.cfg.breaker
	if b == nil {
		return call()
	}
	ok, probe := b.allow(ctx)
	if !ok {
		return circuitOpen()
	}
	start := time.Now()
	err := call()
	b.record(ctx, probe, breakerOutcome(err, e.callerFirst(ctx, start, err)), err)
	return err
}

// callerFirst reports whether err is a timeout of the caller's own deadline,
// earlier than the backend timeout: not Redis's fault.
func (e *engine) callerFirst(ctx context.Context, start time.Time, err *BackendError) bool {
	if err == nil || err.Type != ErrorTimeout {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && dl.Before(start.Add(e.cfg.timeout))
}
