package ratelimit

import (
	"context"
	"fmt"
	"math/bits"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxQuotas is the most quotas a MultiLimiter takes.
const MaxQuotas = 16

// maxQuotaNameLen is the longest quota name accepted, in bytes.
const maxQuotaNameLen = 32

// Quota is one limit of a MultiLimiter: a named Limit counted by an
// algorithm. The zero Algorithm is TokenBucket.
type Quota struct {
	// Name identifies the quota in Result.Quota (so in events, logs and
	// metric labels) and in its Redis key: 1 to 32 bytes of ASCII letters,
	// digits, '_', '-' or '.', unique within the MultiLimiter.
	Name string
	// Limit is the quota's limit, validated for Algorithm.
	Limit Limit
	// Algorithm is TokenBucket, SlidingWindow or FixedWindow. SlidingLog
	// and Concurrency are not available in a MultiLimiter.
	Algorithm Algorithm
}

// MultiLimiter enforces several quotas on each identity at once, all or
// nothing, in one atomic Redis script: "10 a second and 10,000 a day", or
// "60 requests and 100,000 LLM tokens a minute". A call is allowed only if
// every quota allows its cost, and then spends on every quota; if any quota
// denies, nothing is spent anywhere, so a denied request never eats into
// the daily quota. The Result names the quota that decided.
//
// Every key of an identity carries the identity's hash tag, so the script
// runs on Redis Cluster. The keys are <namespace>:<algorithm>:{<hash>}:<quota
// name>, apart from any single-algorithm Limiter's.
//
// Each call is one decision, published on the bus once, with the deciding
// quota's algorithm, key, cost and Result (Result.Quota names it).
//
// A MultiLimiter is safe for concurrent use. Create it once with NewMulti
// and share it.
type MultiLimiter struct {
	e      *engine
	keys   *keyer // the identity's hash tag; each quota adds its prefix and suffix
	quotas []multiQuota
	// args holds ARGV[4...] of multi.lua (five per quota, the costs
	// replaced per call), boxed once.
	args []any
}

type multiQuota struct {
	Quota
	pol    policy
	prefix string // "<namespace>:<algorithm>:"
	suffix string // "}:<name>"
}

// MultiResult is the outcome of a MultiLimiter call.
type MultiResult struct {
	// Result is the call's outcome: Allowed when every quota allowed (or
	// shadow mode did), and the deciding quota's Limit, Remaining,
	// RetryAfter, ResetAfter and name (Quota). When several quotas deny,
	// the one with the longest RetryAfter decides: the call cannot fit
	// before it.
	Result
	// Quotas holds each quota's own result, in the MultiLimiter's order:
	// Allowed says whether that quota alone would allow its cost. For a
	// denied call nothing was spent, so Remaining is before the call.
	Quotas []Result
}

// NewMulti returns a MultiLimiter enforcing quotas (1 to MaxQuotas) on Redis
// through client. It accepts the options of New except WithAlgorithm (each
// Quota has its own) and WithLeaseTTL. The quotas slice is copied.
func NewMulti(client redis.UniversalClient, quotas []Quota, opts ...Option) (*MultiLimiter, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	cfg, err := newConfig(forMulti, opts)
	if err != nil {
		return nil, err
	}
	if len(quotas) == 0 || len(quotas) > MaxQuotas {
		return nil, fmt.Errorf("%w: %d quotas, want 1 to %d", ErrInvalidLimit, len(quotas), MaxQuotas)
	}
	m := &MultiLimiter{quotas: make([]multiQuota, len(quotas)), args: make([]any, 3+5*len(quotas))}
	seen := make(map[string]bool, len(quotas))
	for i, q := range quotas {
		if err := validQuotaName(q.Name); err != nil {
			return nil, err
		}
		if seen[q.Name] {
			return nil, fmt.Errorf("%w: quota name %q used twice", ErrInvalidLimit, q.Name)
		}
		seen[q.Name] = true
		switch q.Algorithm {
		case TokenBucket, SlidingWindow, FixedWindow:
		default:
			return nil, fmt.Errorf("%w: quota %q: algorithm %v is not available in a MultiLimiter (token_bucket, sliding_window, fixed_window are)",
				ErrInvalidLimit, q.Name, q.Algorithm)
		}
		pol, err := q.Algorithm.prepare(q.Limit)
		if err != nil {
			return nil, fmt.Errorf("%w (quota %q)", err, q.Name)
		}
		m.quotas[i] = multiQuota{
			Quota:  q,
			pol:    pol,
			prefix: cfg.namespace + ":" + q.Algorithm.String() + ":",
			suffix: "}:" + q.Name,
		}
		base := 3 + 5*i
		m.args[base], m.args[base+1], m.args[base+2], m.args[base+3] = q.Algorithm.scriptID(), pol.a, pol.b, pol.c
	}
	// Its events carry the deciding quota's algorithm: breaker changes are
	// published under each of them.
	algs := make([]Algorithm, len(quotas))
	for i, q := range quotas {
		algs[i] = q.Algorithm
	}
	m.e = newEngine(client, cfg, algs...)
	m.keys = newKeyer("", cfg.secret)
	return m, nil
}

// WithLimits returns a MultiLimiter whose quotas have limits (one per quota,
// in order) instead of m's, and share everything else with m: names,
// algorithms, keys, options and bus. It is the per-call override for plans
// and tiers; an identity that changes plan keeps its state, as described on
// Limiter.WithLimit. The error wraps ErrInvalidLimit for a wrong number of
// limits or a limit its quota's algorithm cannot enforce.
func (m *MultiLimiter) WithLimits(limits ...Limit) (*MultiLimiter, error) {
	if len(limits) != len(m.quotas) {
		return nil, fmt.Errorf("%w: %d limits for %d quotas", ErrInvalidLimit, len(limits), len(m.quotas))
	}
	view := &MultiLimiter{e: m.e, keys: m.keys, quotas: make([]multiQuota, len(m.quotas)), args: make([]any, len(m.args))}
	copy(view.args, m.args)
	for i, q := range m.quotas {
		pol, err := q.Algorithm.prepare(limits[i])
		if err != nil {
			return nil, fmt.Errorf("%w (quota %q)", err, q.Name)
		}
		q.Limit, q.pol = limits[i], pol
		view.quotas[i] = q
		base := 3 + 5*i
		view.args[base+1], view.args[base+2], view.args[base+3] = pol.a, pol.b, pol.c
	}
	return view, nil
}

func validQuotaName(name string) error {
	if name == "" || len(name) > maxQuotaNameLen {
		return fmt.Errorf("%w: quota name %q must be 1 to %d bytes", ErrInvalidLimit, name, maxQuotaNameLen)
	}
	if i, r, bad := badNameRune(name); bad {
		return fmt.Errorf("%w: quota name %q has %q at byte %d (allowed: ASCII letters, digits, '_', '-', '.')", ErrInvalidLimit, name, r, i)
	}
	return nil
}

// Quotas returns a copy of the limiter's quotas, in order.
func (m *MultiLimiter) Quotas() []Quota {
	out := make([]Quota, len(m.quotas))
	for i, q := range m.quotas {
		out[i] = q.Quota
	}
	return out
}

// Namespace returns the limiter's namespace.
func (m *MultiLimiter) Namespace() string { return m.e.cfg.namespace }

// Keys returns the Redis keys of identity's quotas, in order. They share one
// hash tag, so one Redis Cluster slot.
func (m *MultiLimiter) Keys(identity string) ([]string, error) {
	tag, err := m.keys.tag(identity)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(m.quotas))
	for i, q := range m.quotas {
		keys[i] = q.prefix + tag + q.suffix
	}
	return keys, nil
}

// Allow is shorthand for AllowN(ctx, identity, 1): one unit on every quota.
func (m *MultiLimiter) Allow(ctx context.Context, identity string) (MultiResult, error) {
	return m.AllowN(ctx, identity, 1)
}

// AllowN spends cost on every quota if every quota allows it, else nothing.
// See AllowCosts.
func (m *MultiLimiter) AllowN(ctx context.Context, identity string, cost int64) (MultiResult, error) {
	costs := make([]int64, len(m.quotas))
	for i := range costs {
		costs[i] = cost
	}
	return m.AllowCosts(ctx, identity, costs...)
}

// AllowCosts spends costs[i] on quota i, for every i, if every quota allows
// its cost; else it spends nothing. A cost of 0 leaves its quota out of the
// decision. For example, with quotas "requests" and "tokens":
//
//	res, err := m.AllowCosts(ctx, apiKey, 1, maxTokens)
//
// There must be one cost per quota, each between 0 and its quota's burst
// (else an error wrapping ErrInvalidCost, before anything is decided). The
// error is nil for every decision Redis made; it is a *BackendError when
// Redis failed, and the Result is then the fail strategy's. Every call is
// published once.
func (m *MultiLimiter) AllowCosts(ctx context.Context, identity string, costs ...int64) (MultiResult, error) {
	return m.call(ctx, identity, costs, modeSpend, time.Time{})
}

// Peek returns what Allow would decide now, without spending and without
// publishing an event.
func (m *MultiLimiter) Peek(ctx context.Context, identity string) (MultiResult, error) {
	costs := make([]int64, len(m.quotas))
	for i := range costs {
		costs[i] = 1
	}
	return m.call(ctx, identity, costs, modePeek, time.Time{})
}

// Refund gives amounts[i] back to quota i, one amount per quota (0 for a
// quota to leave alone), of what the call that returned spent spent, with
// the rules of Limiter.Refund: to the window that call was counted in,
// exactly once, never above a full burst or quota, and nothing (no Redis
// call, a zero MultiResult) when spent spent nothing. Reserve the largest
// an LLM request may use with res, err := AllowCosts(ctx, id, 1, maxTokens),
// then Refund(ctx, id, res, 0, maxTokens-used). A refund is not a decision
// and on a Redis failure the error is a *BackendError and the MultiResult
// is zero. It is published as one RefundEvent per quota with a non-zero
// amount, with that quota's algorithm, key, amount and result (see
// Limiter.Refund).
func (m *MultiLimiter) Refund(ctx context.Context, identity string, spent MultiResult, amounts ...int64) (MultiResult, error) {
	if err := m.checkCosts(amounts); err != nil {
		return MultiResult{}, err
	}
	if _, err := m.keys.tag(identity); err != nil {
		return MultiResult{}, err
	}
	if !spent.spent() {
		return MultiResult{}, nil
	}
	return m.call(ctx, identity, amounts, modeRefund, spent.Time)
}

// Reset forgets identity's state in every quota.
func (m *MultiLimiter) Reset(ctx context.Context, identity string) error {
	keys, err := m.Keys(identity)
	if err != nil {
		return err
	}
	return m.e.del(ctx, keys)
}

func (m *MultiLimiter) checkCosts(costs []int64) error {
	if len(costs) != len(m.quotas) {
		return fmt.Errorf("%w: %d costs for %d quotas", ErrInvalidCost, len(costs), len(m.quotas))
	}
	for i, c := range costs {
		if c < 0 || c > m.quotas[i].pol.capacity {
			return fmt.Errorf("%w: cost %d for quota %q must be between 0 and its burst %d",
				ErrInvalidCost, c, m.quotas[i].Name, m.quotas[i].pol.capacity)
		}
	}
	return nil
}

// call runs multi.lua for identity and settles the outcome: as a decision
// (AllowCosts), a refund of the call decided at spentAt, or a Peek.
func (m *MultiLimiter) call(ctx context.Context, identity string, costs []int64, md mode, spentAt time.Time) (MultiResult, error) {
	if err := m.checkCosts(costs); err != nil {
		return MultiResult{}, err
	}
	keys, err := m.Keys(identity)
	if err != nil {
		return MultiResult{}, err
	}
	var start time.Time
	if md != modePeek {
		start = m.e.startTimer()
	}
	res, berr := m.eval(ctx, keys, costs, md, spentAt)
	switch md {
	case modeRefund: // one RefundEvent per quota given something back
		for i, q := range m.quotas {
			if costs[i] != 0 {
				var qres Result
				if berr == nil {
					qres = res.Quotas[i]
				}
				m.e.publishRefund(ctx, q.Algorithm, keys[i], costs[i], start, qres, berr)
			}
		}
		if berr != nil {
			return MultiResult{}, berr
		}
		return res, nil
	case modePeek:
		if berr != nil {
			return m.failResult(m.e.failResult(ctx, m.quotas[0].Limit)), berr
		}
		return res, nil
	}
	i := 0 // the deciding quota; the first when Redis did not decide
	if berr == nil {
		i = m.deciding(res)
	}
	q := m.quotas[i]
	res.Result, err = m.e.finish(ctx, decided{alg: q.Algorithm, key: keys[i], cost: costs[i], limit: q.Limit}, start, res.Result, berr)
	if berr != nil {
		res = m.failResult(res.Result)
	}
	return res, err
}

// deciding returns the index of the quota whose result the call reports.
func (m *MultiLimiter) deciding(res MultiResult) int {
	for i, q := range m.quotas {
		if q.Name == res.Quota {
			return i
		}
	}
	return 0
}

func (m *MultiLimiter) eval(ctx context.Context, keys []string, costs []int64, md mode, spentAt time.Time) (MultiResult, *BackendError) {
	args := make([]any, len(m.args), len(m.args)+2)
	copy(args, m.args)
	args[0], args[1], args[2] = len(m.quotas), int64(md), m.e.nowArg()
	for i, c := range costs {
		args[3+5*i+4] = c
	}
	if md == modeRefund {
		// The refund's own key (under the first quota's key, so in the
		// identity's slot), the refunded call's time, and how long Redis
		// remembers the refund.
		keys = append(keys[:len(keys):len(keys)], newRefundKey(keys[0]))
		args = append(args, spentAt.UnixMicro(), m.e.refundMemoryMS())
	}
	reply, err := m.e.script(ctx, multiScript, keys, args...)
	if err != nil {
		return MultiResult{}, err
	}
	if len(reply) != 2+4*len(m.quotas) {
		return MultiResult{}, newBackendError(fmt.Errorf("ratelimit: unexpected script reply of %d integers", len(reply)))
	}
	out := MultiResult{Quotas: make([]Result, len(m.quotas))}
	for i, q := range m.quotas {
		r := reply[2+4*i:]
		out.Quotas[i] = Result{
			Allowed:    r[0] == 1,
			Reason:     ReasonQuota,
			Limit:      q.Limit,
			Remaining:  r[1],
			RetryAfter: durationUS(r[2]),
			ResetAfter: durationUS(r[3]),
			Quota:      q.Name,
			Time:       time.UnixMicro(reply[1]),
		}
	}
	out.Result = out.Quotas[m.bind(out.Quotas, costs, reply[0] == 1)]
	out.Allowed = reply[0] == 1
	if out.Allowed {
		out.RetryAfter = 0
	}
	return out, nil
}

// bind picks the quota that decides: when denied, the denying quota with the
// longest RetryAfter (the first on a tie); when allowed, the quota with the
// smallest share of its burst left (exactly: r_i/c_i < r_j/c_j compared as
// r_i*c_j < r_j*c_i in 128 bits), among the quotas the call had a cost
// for (a quota with cost 0 was left out of the decision).
func (m *MultiLimiter) bind(rs []Result, costs []int64, allowed bool) int {
	best := -1
	for i, r := range rs {
		switch {
		case !allowed:
			if !r.Allowed && (best < 0 || r.RetryAfter > rs[best].RetryAfter) {
				best = i
			}
		case costs[i] == 0:
		case best < 0 || lessShare(r.Remaining, m.quotas[i].pol.capacity, rs[best].Remaining, m.quotas[best].pol.capacity):
			best = i
		}
	}
	if best < 0 {
		best = 0
	}
	return best
}

func lessShare(r1, c1, r2, c2 int64) bool {
	h1, l1 := bits.Mul64(uint64(max(r1, 0)), uint64(c2))
	h2, l2 := bits.Mul64(uint64(max(r2, 0)), uint64(c1))
	return h1 < h2 || h1 == h2 && l1 < l2
}

// failResult is the MultiResult of a call Redis did not decide: res (the
// fail strategy's, or a denial of a caller that gave up) for the call and
// every quota.
func (m *MultiLimiter) failResult(res Result) MultiResult {
	out := MultiResult{Result: res, Quotas: make([]Result, len(m.quotas))}
	for i, q := range m.quotas {
		out.Quotas[i] = res
		out.Quotas[i].Limit = q.Limit
	}
	out.Limit = m.quotas[0].Limit
	return out
}
