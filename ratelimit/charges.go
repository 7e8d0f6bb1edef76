package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxCharges is the most charges one Charger call takes: the most quotas
// multi.lua decides at once.
const MaxCharges = MaxQuotas

// ErrCrossSlot reports a Charger call on a Redis Cluster whose charges lie
// in several slots, on a Charger made with WithSlotMode(SlotsStrict): such a
// call cannot be one script, so it is refused before anything is decided.
var ErrCrossSlot = errors.New("ratelimit: charges span several Redis Cluster slots")

// Charge is one part of an all-or-nothing decision of a Charger: Cost units
// of Identity's Limit, counted by Algorithm. Unlike the quotas of a
// MultiLimiter, which are fixed at construction and all belong to one
// identity, charges are built per call and each names its own identity and
// limit: the descriptors of one Envoy rate limit request ("per client IP",
// "per route", "per tenant"), or a user's and a tenant's limit at once.
//
// A Charge is a plain value; the zero Algorithm is TokenBucket.
type Charge struct {
	// Identity is whose limit is charged (a user, an API key, a descriptor
	// path): 1 to MaxIdentityLen bytes, hashed before it reaches Redis.
	Identity string
	// Limit is the limit, validated for Algorithm. The state of an
	// identity does not depend on its limit: charging the same identity
	// with another limit (a plan change, an Envoy override) continues its
	// state, as Limiter.WithLimit does.
	Limit Limit
	// Algorithm is TokenBucket, SlidingWindow or FixedWindow.
	Algorithm Algorithm
	// Cost is the cost to spend (or, for RefundAll, to give back): 0 to
	// the limit's burst. A Charge of cost 0 takes no part in the decision.
	Cost int64
	// Name, when not empty, names the charge in its Result.Quota and so in
	// events, logs and metric labels: it must be a bounded value (from
	// configuration, never from a request), with the rules of Quota.Name.
	Name string
}

// SlotMode says how a Charger decides, on a Redis Cluster, a call whose
// identities hash to several slots (a script can only touch one slot). On
// a single Redis, a Sentinel failover client or a Ring shard every call is
// one script, and every SlotMode is all or nothing.
type SlotMode uint8

const (
	// SlotsPerGroup (the default) splits such a call into one script per
	// slot, run one after another in slot order. Each group is all or
	// nothing. When a later group denies (or fails under FailClosed), the
	// groups already spent are given back at once with a refund, so the
	// call as a whole spends nothing; between the two, other callers may
	// see those units spent, so the service can deny more than the limits
	// say, never admit more. Identities keep their own hash tags and
	// spread over every shard.
	SlotsPerGroup SlotMode = iota
	// SlotsStrict refuses such a call with ErrCrossSlot: use it with
	// Tagged views (one slot per call) or where a compensating refund is
	// not acceptable.
	SlotsStrict
)

// Charger decides several charges (identity, limit, algorithm, cost) all
// or nothing, each call with its own list: a call is allowed only if every
// charge fits, and then spends every cost; if any charge does not fit,
// nothing is spent anywhere. It runs multi.lua, the script of MultiLimiter,
// so each charge is counted exactly as a Limiter of its algorithm counts.
//
// Keys: a charge's state lives under <namespace>:<algorithm>:{<hash of
// identity>}, the key of a Limiter with the same namespace and algorithm,
// so a Charger and Limiters share state. On a Redis Cluster, charges of
// different identities usually hash to different slots; see SlotMode for
// what the Charger then does, and Tagged for a view whose keys share one
// slot per call, which keeps every call a single script.
//
// Each call is one decision, published once on the bus with the deciding
// charge's algorithm, key, cost and Result (Result.Quota is its Name), as
// a MultiLimiter's is; the Limit of the fail strategy's Result is the first
// charge's.
//
// A Charger is safe for concurrent use. Create it once with NewCharger and
// share it.
type Charger struct {
	// l is a Limiter for the Redis seam (exec), options, bus and fail
	// strategy; its limit is unused.
	l       *Limiter
	mode    SlotMode
	cluster bool
	// tag is "" or "{<hex hash of the tag>" (Tagged): then every key is
	// <namespace>:<algorithm>:{<tag hash>}:<identity hash>.
	tag string
}

// NewCharger returns a Charger on Redis through client. It accepts the
// options of New except WithAlgorithm (each Charge has its own) and
// WithLeaseTTL; WithShadow allows every call and reports what would have
// been denied, as for a Limiter.
func NewCharger(client redis.UniversalClient, opts ...Option) (*Charger, error) {
	return NewChargerMode(client, SlotsPerGroup, opts...)
}

// NewChargerMode is NewCharger with a SlotMode other than the default
// SlotsPerGroup.
func NewChargerMode(client redis.UniversalClient, mode SlotMode, opts ...Option) (*Charger, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	if mode != SlotsPerGroup && mode != SlotsStrict {
		return nil, fmt.Errorf("%w: unknown slot mode %d", ErrInvalidOption, mode)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.algSet {
		return nil, fmt.Errorf("%w: WithAlgorithm does not apply to NewCharger: set Charge.Algorithm", ErrInvalidOption)
	}
	if cfg.leaseTTL != 0 {
		return nil, fmt.Errorf("%w: WithLeaseTTL applies to NewConcurrency only", ErrInvalidOption)
	}
	placeholder := PerSecond(1)
	pol, _ := TokenBucket.prepare(placeholder)
	c := &Charger{l: newLimiter(client, cfg, placeholder, pol), mode: mode}
	_, c.cluster = client.(*redis.ClusterClient)
	for _, a := range []Algorithm{TokenBucket, SlidingWindow, FixedWindow} {
		c.l.attachBreaker(a)
	}
	return c, nil
}

// Tagged returns a view of c whose keys all carry one Redis Cluster hash
// tag made from tag (hashed like an identity, so any string will do: an
// Envoy domain, a tenant): <namespace>:<algorithm>:{<hash of
// tag>}:<hash of identity>. Every call of the view is then one script in
// one slot, all or nothing on a Cluster too. The price is that every
// identity charged under one tag lives on one shard, which takes all of
// that tag's load: a hot slot. The view's keys differ from c's, so the two
// do not share state. The view shares everything else with c.
func (c *Charger) Tagged(tag string) (*Charger, error) {
	t, err := c.l.keys.tag(tag)
	if err != nil {
		return nil, fmt.Errorf("%w (the tag)", err)
	}
	v := *c
	v.tag = t
	return &v, nil
}

// Namespace returns the charger's namespace.
func (c *Charger) Namespace() string { return c.l.cfg.namespace }

// Keys returns the Redis key of each charge, in order. Charges with the
// same Identity and Algorithm have the same key.
func (c *Charger) Keys(charges ...Charge) ([]string, error) {
	keys := make([]string, len(charges))
	for i, ch := range charges {
		k, err := c.key(ch)
		if err != nil {
			return nil, fmt.Errorf("%w (charge %d)", err, i)
		}
		keys[i] = k
	}
	return keys, nil
}

func (c *Charger) key(ch Charge) (string, error) {
	prefix := c.l.cfg.namespace + ":" + ch.Algorithm.String() + ":"
	if c.tag != "" {
		return c.l.keys.format(ch.Identity, prefix+c.tag+"}:", false)
	}
	return c.l.keys.format(ch.Identity, prefix+"{", true)
}

// AllowAll spends every charge's cost if every charge fits, else nothing.
// The MultiResult's Quotas hold one Result per charge, in order (charges
// with the same key are counted once with the sum of their costs, and
// each gets that Result); its Result is the deciding charge's: when
// denied, the one with the longest RetryAfter; when allowed, the one with
// the smallest share of its burst left.
//
// The error wraps ErrInvalidLimit, ErrInvalidCost or ErrInvalidIdentity for
// bad input (nothing decided, nothing published): no charge, more than
// MaxCharges, a limit its algorithm cannot enforce, a cost outside 0 to the
// burst, an algorithm other than TokenBucket, SlidingWindow or FixedWindow,
// a bad Name, or two charges with one key but different limits. It wraps
// ErrCrossSlot under SlotsStrict (see SlotMode). It is a *BackendError when
// Redis failed, and the Result is then the fail strategy's.
func (c *Charger) AllowAll(ctx context.Context, charges ...Charge) (MultiResult, error) {
	return c.run(ctx, charges, modeSpend, MultiResult{})
}

// PeekAll returns what AllowAll would decide now, without spending and
// without publishing an event.
func (c *Charger) PeekAll(ctx context.Context, charges ...Charge) (MultiResult, error) {
	return c.run(ctx, charges, modePeek, MultiResult{})
}

// RefundAll gives each charge's Cost back to its identity, for the call of
// AllowAll that returned spent (pass the same charges, with the amounts to
// give back as costs), with the rules of Limiter.Refund: to the window
// that call was counted in, exactly once, never above a full burst, and
// nothing (no Redis call, a zero MultiResult) when spent spent nothing. A
// refund is not a decision: on a Redis failure the error is a
// *BackendError and the MultiResult is zero. It is published as one
// RefundEvent per charge with a non-zero cost.
func (c *Charger) RefundAll(ctx context.Context, spent MultiResult, charges ...Charge) (MultiResult, error) {
	if _, err := c.prepare(charges); err != nil {
		return MultiResult{}, err
	}
	if !spent.spent() {
		return MultiResult{}, nil
	}
	return c.run(ctx, charges, modeRefund, spent)
}

// Reset forgets the state of every charge's identity (for its algorithm).
func (c *Charger) Reset(ctx context.Context, charges ...Charge) error {
	if len(charges) == 0 {
		return nil
	}
	keys, err := c.Keys(charges...)
	if err != nil {
		return err
	}
	if !c.cluster || c.tag != "" {
		return c.l.del(ctx, keys)
	}
	// A multi-key DEL must stay within one slot on a Cluster.
	for _, k := range keys {
		if err := c.l.del(ctx, []string{k}); err != nil {
			return err
		}
	}
	return nil
}

// chargeQuota is one distinct key of a call: the charges that share it are
// counted once, with the sum of their costs.
type chargeQuota struct {
	key  string
	alg  Algorithm
	pol  policy
	lim  Limit
	name string
	cost int64
	slot int
}

// prepared is a validated call: its distinct quotas, which quota each
// charge maps to, and the quotas grouped by slot (one group off a
// Cluster).
type prepared struct {
	quotas []chargeQuota
	of     []int
	groups [][]int
}

func (c *Charger) prepare(charges []Charge) (prepared, error) {
	if len(charges) == 0 || len(charges) > MaxCharges {
		return prepared{}, fmt.Errorf("%w: %d charges, want 1 to %d", ErrInvalidCost, len(charges), MaxCharges)
	}
	p := prepared{of: make([]int, len(charges))}
	byKey := make(map[string]int, len(charges))
	for i, ch := range charges {
		switch ch.Algorithm {
		case TokenBucket, SlidingWindow, FixedWindow:
		default:
			return prepared{}, fmt.Errorf("%w: charge %d: algorithm %v is not available to a Charger (token_bucket, sliding_window, fixed_window are)",
				ErrInvalidLimit, i, ch.Algorithm)
		}
		if ch.Name != "" {
			if err := validQuotaName(ch.Name); err != nil {
				return prepared{}, fmt.Errorf("%w (charge %d)", err, i)
			}
		}
		pol, err := ch.Algorithm.prepare(ch.Limit)
		if err != nil {
			return prepared{}, fmt.Errorf("%w (charge %d)", err, i)
		}
		if ch.Cost < 0 || ch.Cost > pol.capacity {
			return prepared{}, fmt.Errorf("%w: cost %d of charge %d must be between 0 and its burst %d", ErrInvalidCost, ch.Cost, i, pol.capacity)
		}
		key, err := c.key(ch)
		if err != nil {
			return prepared{}, fmt.Errorf("%w (charge %d)", err, i)
		}
		if j, ok := byKey[key]; ok {
			// One key twice in one script would be loaded twice and
			// written twice, and the second write would lose the first
			// spend: count it once, with both costs.
			q := &p.quotas[j]
			if q.pol != pol {
				return prepared{}, fmt.Errorf("%w: charges %d and another one charge the same identity with different limits (%v, %v)",
					ErrInvalidLimit, i, q.lim, ch.Limit)
			}
			if q.cost+ch.Cost > pol.capacity {
				return prepared{}, fmt.Errorf("%w: charges of one identity cost %d together, above its burst %d", ErrInvalidCost, q.cost+ch.Cost, pol.capacity)
			}
			q.cost += ch.Cost
			p.of[i] = j
			continue
		}
		byKey[key] = len(p.quotas)
		p.of[i] = len(p.quotas)
		p.quotas = append(p.quotas, chargeQuota{key: key, alg: ch.Algorithm, pol: pol, lim: ch.Limit, name: ch.Name, cost: ch.Cost})
	}
	if !c.cluster || c.tag != "" {
		all := make([]int, len(p.quotas))
		for i := range all {
			all[i] = i
		}
		p.groups = [][]int{all}
		return p, nil
	}
	bySlot := map[int][]int{}
	for i := range p.quotas {
		s := keySlot(p.quotas[i].key)
		p.quotas[i].slot = s
		bySlot[s] = append(bySlot[s], i)
	}
	slots := make([]int, 0, len(bySlot))
	for s := range bySlot {
		slots = append(slots, s)
	}
	if len(slots) > 1 && c.mode == SlotsStrict {
		return prepared{}, fmt.Errorf("%w: %d slots (use a Tagged view, or SlotsPerGroup)", ErrCrossSlot, len(slots))
	}
	sort.Ints(slots) // a fixed order: two calls never take groups in opposite orders
	for _, s := range slots {
		p.groups = append(p.groups, bySlot[s])
	}
	return p, nil
}

// run decides (or peeks at, or refunds) charges, group by group.
func (c *Charger) run(ctx context.Context, charges []Charge, mode int, spent MultiResult) (MultiResult, error) {
	p, err := c.prepare(charges)
	if err != nil {
		return MultiResult{}, err
	}
	publish := mode != modePeek && c.l.bus.Enabled()
	var start time.Time
	if publish {
		start = time.Now()
	}
	results := make([]Result, len(p.quotas))
	if mode == modeRefund {
		var berr *BackendError
		for _, g := range p.groups {
			at := spent.Time
			if first := firstCharge(p, g[0]); first < len(spent.Quotas) && !spent.Quotas[first].Time.IsZero() {
				at = spent.Quotas[first].Time
			}
			if _, berr = c.evalGroup(ctx, p, g, mode, at, results); berr != nil {
				break
			}
		}
		if publish {
			for i, ch := range charges {
				if ch.Cost == 0 {
					continue
				}
				var r Result
				if berr == nil {
					r = results[p.of[i]]
				}
				c.l.publishRefund(ctx, ch.Algorithm, p.quotas[p.of[i]].key, ch.Cost, r, start, berr)
			}
		}
		if berr != nil {
			return MultiResult{}, berr
		}
		out, _ := c.assemble(p, results, true)
		return out, nil
	}

	allowed := true
	var berr *BackendError
	var done [][]int // groups spent so far, to give back if a later one denies
	for _, g := range p.groups {
		ok, err := c.evalGroup(ctx, p, g, mode, time.Time{}, results)
		if err != nil {
			berr = err
			break
		}
		if !ok {
			allowed = false
			break
		}
		done = append(done, g)
	}
	var out MultiResult
	decider := 0
	if berr != nil {
		out = c.failResult(ctx, charges, p)
	} else {
		out, decider = c.assemble(p, results, allowed)
		if mode == modeSpend {
			out.Result = c.l.shadow(out.Result)
		}
	}
	// The call spends nothing when it is denied: by a group (also in
	// shadow mode, which allows the call but spends what an enforced call
	// would), or by the fail strategy after a group failed.
	denied := berr == nil && !allowed || berr != nil && !out.Allowed
	if mode == modeSpend && denied && len(done) > 0 {
		c.compensate(ctx, p, done, results)
	}
	if publish {
		q := p.quotas[decider]
		c.l.publish(ctx, q.alg, q.key, q.cost, out.Result, start, berr)
	}
	if berr != nil {
		return out, berr
	}
	return out, nil
}

// firstCharge returns the index of the first charge counted in quota q.
func firstCharge(p prepared, q int) int {
	for i, j := range p.of {
		if j == q {
			return i
		}
	}
	return 0
}

// compensate gives back what the groups in done spent, after a later group
// denied the call: one refund per group, exactly once, as RefundAll does.
// A refund that fails leaves those units spent (an over-denial, never an
// over-admission); it is published as a RefundEvent with its error.
func (c *Charger) compensate(ctx context.Context, p prepared, done [][]int, results []Result) {
	publish := c.l.bus.Enabled()
	for _, g := range done {
		var start time.Time
		if publish {
			start = time.Now()
		}
		at := results[g[0]].Time
		scratch := make([]Result, len(p.quotas))
		_, berr := c.evalGroup(context.WithoutCancel(ctx), p, g, modeRefund, at, scratch)
		if publish {
			for _, q := range g {
				if p.quotas[q].cost > 0 {
					c.l.publishRefund(ctx, p.quotas[q].alg, p.quotas[q].key, p.quotas[q].cost, scratch[q], start, berr)
				}
			}
		}
	}
}

// evalGroup runs multi.lua on the quotas of group g (one slot) and stores
// each quota's Result in results. It reports whether the group allowed.
func (c *Charger) evalGroup(ctx context.Context, p prepared, g []int, mode int, spentAt time.Time, results []Result) (bool, *BackendError) {
	keys := make([]string, len(g), len(g)+1)
	args := make([]any, 3+5*len(g), 5+5*len(g))
	args[0], args[1], args[2] = len(g), mode, c.l.nowArg()
	for i, q := range g {
		cq := p.quotas[q]
		keys[i] = cq.key
		base := 3 + 5*i
		args[base], args[base+1], args[base+2], args[base+3], args[base+4] = int64(cq.alg), cq.pol.a, cq.pol.b, cq.pol.c, cq.cost
	}
	if mode == modeRefund {
		refundKey, err := newRefundKey(keys[0])
		if err != nil {
			return false, newBackendError(err)
		}
		keys = append(keys, refundKey)
		args = append(args, spentAt.UnixMicro(), c.l.refundMemoryMS())
	}
	reply, berr := c.l.exec(ctx, multiScript, keys, args...)
	if berr != nil {
		return false, berr
	}
	if len(reply) != 2+4*len(g) {
		return false, newBackendError(fmt.Errorf("ratelimit: unexpected script reply of %d integers", len(reply)))
	}
	at := time.UnixMicro(reply[1])
	for i, q := range g {
		r := reply[2+4*i:]
		results[q] = Result{
			Allowed:    r[0] == 1,
			Reason:     ReasonQuota,
			Limit:      p.quotas[q].lim,
			Remaining:  r[1],
			RetryAfter: durationUS(r[2]),
			ResetAfter: durationUS(r[3]),
			Quota:      p.quotas[q].name,
			Time:       at,
		}
	}
	return reply[0] == 1, nil
}

// assemble builds the call's MultiResult from the quotas' results: one per
// charge, and the deciding one as the call's. Quotas of groups that were
// not run (after a denying group) report no result of their own: they are
// marked allowed with Reason quota and a zero Time, since their cost was
// not the reason of the denial.
func (c *Charger) assemble(p prepared, results []Result, allowed bool) (MultiResult, int) {
	out := MultiResult{Quotas: make([]Result, len(p.of))}
	for q := range results {
		if results[q].Time.IsZero() {
			results[q] = Result{Allowed: true, Reason: ReasonQuota, Limit: p.quotas[q].lim, Quota: p.quotas[q].name}
		}
	}
	for i, q := range p.of {
		out.Quotas[i] = results[q]
	}
	best := -1
	for q, r := range results {
		switch {
		case !allowed:
			if !r.Allowed && (best < 0 || r.RetryAfter > results[best].RetryAfter) {
				best = q
			}
		case p.quotas[q].cost == 0:
		case best < 0 || lessShare(r.Remaining, p.quotas[q].pol.capacity, results[best].Remaining, p.quotas[best].pol.capacity):
			best = q
		}
	}
	if best < 0 {
		best = 0
	}
	out.Result = results[best]
	out.Allowed = allowed
	if allowed {
		out.RetryAfter = 0
	}
	// The call's time is the latest of its groups': a refund of the call
	// as a whole (RefundAll with only spent.Time) then lands in windows
	// every group has reached.
	for _, r := range results {
		if r.Time.After(out.Time) {
			out.Time = r.Time
		}
	}
	return out, best
}

func (c *Charger) failResult(ctx context.Context, charges []Charge, p prepared) MultiResult {
	res := c.l.failResult(ctx)
	out := MultiResult{Result: res, Quotas: make([]Result, len(charges))}
	for i, q := range p.of {
		out.Quotas[i] = res
		out.Quotas[i].Limit = p.quotas[q].lim
		out.Quotas[i].Quota = p.quotas[q].name
	}
	out.Limit = p.quotas[0].lim
	out.Quota = p.quotas[0].name
	return out
}

// keySlot returns the Redis Cluster slot of key: CRC16 (XMODEM) of its hash
// tag, or of the whole key without one, modulo 16384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
