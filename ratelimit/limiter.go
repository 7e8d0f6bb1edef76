package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter enforces one Limit per identity, shared by every process that uses
// the same Redis, namespace and algorithm. Each decision is atomic on Redis,
// timed by Redis TIME, and published on the limiter's bus.
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
	e     *engine
	view  bool // made by WithLimit: Close does nothing
	limit Limit
	keys  *keyer
	alg   Algorithm
	// capacity is the most one call may cost: the burst, or the smallest
	// shard's (WithShards); caps holds each shard's.
	capacity int64
	caps     []int64
	// args are the script parameters of the limit, or of each shard's part
	// of it, boxed once: algorithm id, a, b, c.
	args [][4]any
	// shards and tries: WithShards and WithShardTries; 1 and 1 unsharded.
	shards, tries int
}

// New returns a Limiter enforcing limit on Redis through client: a
// *redis.Client, *redis.ClusterClient, *redis.Ring, or a failover (Sentinel)
// client. The client stays the caller's: Close does not close it.
//
// The backend timeout (WithTimeout) cuts a call to a stalled Redis short
// when the client was created with ContextTimeoutEnabled: true; otherwise
// each call runs on a goroutine of its own so that the caller still returns
// on time (the goroutine ends at the client's ReadTimeout).
//
// The limit is validated for the algorithm (WithAlgorithm): the window
// algorithms reject a Burst other than 0 or Rate.
func New(client redis.UniversalClient, limit Limit, opts ...Option) (*Limiter, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	cfg, err := newConfig(forNew, opts)
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		keys:   newKeyer(cfg.namespace+":"+cfg.algorithm.String()+":", cfg.secret),
		alg:    cfg.algorithm,
		shards: max(cfg.shards, 1),
	}
	l.tries = l.shards
	if cfg.shardTries > 0 {
		if cfg.shardTries > l.shards {
			return nil, fmt.Errorf("%w: %d shard tries for %d shards", ErrInvalidOption, cfg.shardTries, l.shards)
		}
		l.tries = cfg.shardTries
	}
	if err := l.setLimit(limit); err != nil {
		return nil, err
	}
	l.e = newEngine(client, cfg, cfg.algorithm)
	return l, nil
}

// setLimit prepares limit (or each shard's part of it) for the scripts.
func (l *Limiter) setLimit(limit Limit) error {
	var pols []policy
	if l.shards > 1 {
		var err error
		if pols, err = shardPolicies(l.alg, limit, l.shards); err != nil {
			return err
		}
	} else {
		pol, err := l.alg.prepare(limit)
		if err != nil {
			return err
		}
		pols = []policy{pol}
	}
	l.limit, l.capacity = limit, pols[len(pols)-1].capacity
	l.args, l.caps = make([][4]any, len(pols)), make([]int64, len(pols))
	for i, p := range pols {
		l.args[i], l.caps[i] = [4]any{l.alg.scriptID(), p.a, p.b, p.c}, p.capacity
	}
	return nil
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
	l.e.owned = true
	return l, nil
}

// nilClient reports whether c is nil, or holds a nil pointer: a
// *redis.Client variable that was never assigned is a non-nil interface,
// and would panic on first use.
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

// Close closes the Redis client if NewFromURL created it, and does nothing
// otherwise (nor on a view from WithLimit).
func (l *Limiter) Close() error {
	if l.view {
		return nil
	}
	return l.e.close()
}

// WithLimit returns a Limiter that enforces limit instead of l's own, and
// shares everything else with l: client, namespace, algorithm, identity
// keys, options and bus. It is the per-call override for plans and tiers:
//
//	res, err := limiter.WithLimit(plans[user.Plan]).AllowN(ctx, user.ID, 1)
//
// is one small allocation and no Redis call (keep one view per plan to
// avoid even that). An identity that changes plan keeps its state:
//   - TokenBucket keeps the tokens left (at most the new burst) and
//     refills at the new rate;
//   - FixedWindow and SlidingWindow keep the units spent in the current
//     window (with a new Per, what the old window spent that overlaps the
//     new one counts in the new window); spend above a lowered quota counts
//     as the whole quota;
//   - SlidingLog keeps its log; a new Per counts the entries inside it
//     (entries dropped under a shorter Per are gone).
//
// The key's TTL always covers what the current limit still needs, also
// after a change to a longer limit followed only by denials.
//
// The error wraps ErrInvalidLimit when limit cannot be enforced by l's
// algorithm. The view's Close does nothing.
func (l *Limiter) WithLimit(limit Limit) (*Limiter, error) {
	view := *l
	view.view = true
	if err := view.setLimit(limit); err != nil {
		return nil, err
	}
	return &view, nil
}

// Limit returns the limit the Limiter enforces.
func (l *Limiter) Limit() Limit { return l.limit }

// Namespace returns the limiter's namespace.
func (l *Limiter) Namespace() string { return l.e.cfg.namespace }

// Algorithm returns the limiter's algorithm.
func (l *Limiter) Algorithm() Algorithm { return l.alg }

// Key returns the Redis key that holds identity's state, for operators and
// tests (with WithShards, the first shard's). It is the hashed form; the
// identity itself is never stored. The SlidingLog algorithm keeps a second
// key beside it, Key + ":meta".
func (l *Limiter) Key(identity string) (string, error) {
	var buf [1]string
	keys, err := l.keysOf(identity, &buf)
	if err != nil {
		return "", err
	}
	return keys[0], nil
}

// scriptKeys returns the keys of key's state: key alone, or key and its
// meta key (one hash tag, so one Cluster slot).
func (l *Limiter) scriptKeys(key string) []string {
	if l.alg.twoKeys() {
		return []string{key, key + metaSuffix}
	}
	return []string{key}
}

// Check reports whether the limiter can decide: it pings Redis and makes a
// decision that spends nothing (a Peek of an identity of its own), which
// also loads the decision functions library into Redis (the decision
// script, on a server without functions). Call it at start to fail with
// a clear error rather than at the first request: nil, or a *BackendError
// whose message says what failed (refused, NOAUTH, NOPERM, a timeout).
//
// When the ping times out, Check dials Redis's address once itself: with
// go-redis's default retries a refused connection only shows as a timeout,
// so the dial's own error (connection refused, no such host) is what Check
// returns then, as an ErrorConnection.
func (l *Limiter) Check(ctx context.Context) error {
	pingCtx, cancel := context.WithTimeout(ctx, l.e.cfg.timeout)
	defer cancel()
	if err := l.e.bounded(pingCtx, func(ctx context.Context) error { return l.e.client.Ping(ctx).Err() }); err != nil {
		if classify(err) == ErrorTimeout && ctx.Err() == nil {
			dialCtx, cancel := context.WithTimeout(ctx, l.e.cfg.timeout)
			defer cancel()
			if cause := dialOnce(dialCtx, l.e.client); cause != nil {
				return newBackendError(fmt.Errorf("ratelimit: check: cannot connect to Redis: %w (ping: %v)", cause, err))
			}
		}
		return newBackendError(fmt.Errorf("ratelimit: check: ping: %w", err))
	}
	if _, err := l.Peek(pingCtx, "ratelimit:check"); err != nil {
		return err
	}
	return nil
}

// dialOnce opens and closes one connection to the client's (first) address
// with the client's own dialer, TLS included; nil when that works or the
// client's kind does not say its address.
func dialOnce(ctx context.Context, client redis.UniversalClient) error {
	var network, addr string
	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	switch c := client.(type) {
	case *redis.Client:
		o := c.Options()
		network, addr, dial = o.Network, o.Addr, o.Dialer
	case *redis.ClusterClient:
		o := c.Options()
		if len(o.Addrs) == 0 {
			return nil
		}
		network, addr, dial = "tcp", o.Addrs[0], o.Dialer
	default:
		return nil
	}
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, network, addr)
	if err != nil {
		return err
	}
	_ = conn.Close()
	return nil
}

// Allow is shorthand for AllowN(ctx, identity, 1).
func (l *Limiter) Allow(ctx context.Context, identity string) (Result, error) {
	return l.AllowN(ctx, identity, 1)
}

// AllowN reports whether identity may spend cost now, and spends it if so.
// A denied call spends nothing; a cost of 0 spends nothing and is always
// allowed (it reports the state like Peek, and is published).
//
// The error is nil for every decision Redis made, allowed or not. It wraps
// ErrInvalidCost or ErrInvalidIdentity for bad input (nothing is decided or
// published, and the Result is zero). It is a *BackendError when Redis did
// not decide: the Result is then the FailStrategy's, or a denial with
// ReasonCanceled when ctx ended first; the decision is published with the
// error.
func (l *Limiter) AllowN(ctx context.Context, identity string, cost int64) (Result, error) {
	if err := l.checkCost(cost); err != nil {
		return Result{}, err
	}
	var buf [1]string
	keys, err := l.keysOf(identity, &buf)
	if err != nil {
		return Result{}, err
	}
	d := decided{alg: l.alg, key: keys[0], cost: cost, limit: l.limit}
	cache := l.e.denials
	if cache != nil && cost > 0 {
		if res, ok := cache.get(keys[0], l.limit, cost, l.e.localNow()); ok {
			d.cached = true
			return l.e.finish(ctx, d, time.Time{}, res, nil)
		}
	}
	start := l.e.startTimer()
	res, shard, berr := l.spend(ctx, keys, cost)
	d.key, d.shard = keys[shard], res.shard
	if cache != nil && berr == nil && !res.Allowed {
		cache.put(keys[0], l.limit, cost, res, l.e.localNow())
	}
	return l.e.finish(ctx, d, start, res, berr)
}

// spend asks identity's shards (its one key, unsharded) for cost, from a
// random one on, until one allows or l.tries have denied; it returns the
// Result and the index of the shard that decided: the one that allowed, or
// of the denials the one that can take the cost soonest.
func (l *Limiter) spend(ctx context.Context, keys []string, cost int64) (Result, int, *BackendError) {
	first := 0
	if len(keys) > 1 {
		first = firstShard(len(keys))
	}
	var (
		best  Result
		which int
	)
	for t := range l.tries {
		i := (first + t) % len(keys)
		res, berr := l.run(ctx, l.decision(keys[i], i, cost, modeSpend, nil))
		if berr != nil {
			return Result{}, i, berr
		}
		res.shard = l.shardNo(i)
		if res.Allowed {
			return res, i, nil
		}
		if t == 0 || res.RetryAfter < best.RetryAfter {
			best, which = res, i
		}
	}
	return best, which, nil
}

// shardNo is the number a Result and an Event give shard i: 1 to n, or 0
// unsharded.
func (l *Limiter) shardNo(i int) int {
	if l.shards > 1 {
		return i + 1
	}
	return 0
}

// keysOf returns the keys of identity's state: one, or one per shard. The
// one key goes into buf, so that an unsharded call allocates no slice.
func (l *Limiter) keysOf(identity string, buf *[1]string) ([]string, error) {
	if l.shards > 1 {
		return l.keys.shardKeys(identity, l.shards)
	}
	key, err := l.keys.key(identity)
	if err != nil {
		return nil, err
	}
	buf[0] = key
	return buf[:], nil
}

// Peek returns what Allow would decide now, without spending anything and
// without publishing an event. When Redis does not decide, the Result is as
// for AllowN. With WithShards it reads every shard: Remaining is the sum of
// theirs, and a call of one unit is allowed when any shard has it.
func (l *Limiter) Peek(ctx context.Context, identity string) (Result, error) {
	var buf [1]string
	keys, err := l.keysOf(identity, &buf)
	if err != nil {
		return Result{}, err
	}
	var total Result
	for i, key := range keys {
		res, berr := l.run(ctx, l.decision(key, i, 1, modePeek, nil))
		if berr != nil {
			return l.e.failResult(ctx, l.limit), berr
		}
		if i == 0 {
			total = res
			continue
		}
		total.Remaining += res.Remaining
		total.ResetAfter = max(total.ResetAfter, res.ResetAfter)
		switch {
		case res.Allowed && !total.Allowed:
			total.Allowed, total.RetryAfter = true, 0
		case !res.Allowed && !total.Allowed:
			total.RetryAfter = min(total.RetryAfter, res.RetryAfter)
		}
	}
	return total, nil
}

// Reset forgets identity's state: its next call starts with a full burst.
func (l *Limiter) Reset(ctx context.Context, identity string) error {
	var buf [1]string
	keys, err := l.keysOf(identity, &buf)
	if err != nil {
		return err
	}
	if l.e.denials != nil {
		l.e.denials.forget(keys[0])
	}
	var all []string
	for _, k := range keys {
		all = append(all, l.scriptKeys(k)...)
	}
	return l.e.del(ctx, all)
}

// Wait blocks until identity may spend cost, spends it and returns the
// allowing Result, or returns early:
//   - with an error wrapping ErrInvalidCost at once, for a cost above the
//     burst (it could never be allowed);
//   - with ErrWouldExceedDeadline at once, when ctx's deadline comes before
//     the cost could be allowed;
//   - with ctx's error when ctx ends while waiting;
//   - with the *BackendError when Redis does not decide (the Result, allowed
//     or not, is as for AllowN).
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
	if cost > l.capacity {
		return fmt.Errorf("%w: cost %d is above the burst %d and could never be allowed", ErrInvalidCost, cost, l.capacity)
	}
	return nil
}

// refundArgs are a refund's extra arguments to decide.lua: the refunded
// call's time and how long Redis remembers the refund; its own key goes
// after the state's keys.
type refundArgs struct {
	key     string
	spentAt int64
	keepMS  int64
}

// decision builds the decide.lua call of one decision for key, of shard i
// (0 unsharded).
func (l *Limiter) decision(key string, i int, cost int64, m mode, refund *refundArgs) *decision {
	d := &decision{nargs: 6, now: l.e.nowArg()}
	d.keys = append(d.keyArr[:0], key)
	if l.alg.twoKeys() {
		d.keys = append(d.keys, key+metaSuffix)
	}
	a := &l.args[i]
	d.args[0], d.args[1], d.args[2], d.args[3], d.args[4], d.args[5] = a[0], a[1], a[2], a[3], cost, int64(m)
	if refund != nil {
		d.keys = append(d.keys, refund.key)
		d.args[6], d.args[7], d.nargs = refund.spentAt, refund.keepMS, 8
	}
	return d
}

// run runs d and reads its reply.
func (l *Limiter) run(ctx context.Context, d *decision) (Result, *BackendError) {
	if err := l.e.decide(ctx, d); err != nil {
		return Result{}, err
	}
	return l.result(d)
}

// result reads the reply of a decision that came back.
func (l *Limiter) result(d *decision) (Result, *BackendError) {
	if d.err != nil {
		return Result{}, newBackendError(d.err)
	}
	return Result{
		Allowed:    d.reply[0] == 1,
		Reason:     ReasonQuota,
		Limit:      l.limit,
		Remaining:  d.reply[1],
		RetryAfter: durationUS(d.reply[2]),
		ResetAfter: durationUS(d.reply[3]),
		Time:       time.UnixMicro(d.reply[4]),
	}, nil
}
