package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Charge is one part of an all-or-nothing Charger call: Cost units of
// Identity's Limit, counted by Algorithm. Unlike the quotas of a
// MultiLimiter, fixed at construction and all of one identity, charges are
// built per call and each names its own identity and limit.
//
// A Charge is a plain value; the zero Algorithm is TokenBucket.
type Charge struct {
	// Identity is whose limit is charged: 1 to MaxIdentityLen bytes,
	// hashed before it reaches Redis.
	Identity string
	// Limit is the limit, validated for Algorithm. An identity's state
	// does not depend on its limit: charging it with another limit
	// continues its state, as Limiter.WithLimit does.
	Limit Limit
	// Algorithm is TokenBucket, SlidingWindow or FixedWindow.
	Algorithm Algorithm
	// Cost is what AllowAll spends and RefundAll gives back: 0 to the
	// limit's burst. A charge of cost 0 takes no part in the decision.
	Cost int64
	// Name, when not empty, is the charge's Result.Quota, so a label of
	// events, logs and metrics: a bounded value (from configuration,
	// never from a request), with the rules of Quota.Name.
	Name string
}

// chargeAlgorithms are the algorithms a Charge may use: those of multi.lua.
var chargeAlgorithms = [...]Algorithm{TokenBucket, SlidingWindow, FixedWindow}

// Charger decides several charges all or nothing, with a list built per
// call: a call is allowed only if every charge fits, and then spends every
// cost; if one does not fit, nothing is spent anywhere. Each charge is
// counted exactly as by a Limiter of its algorithm, under that Limiter's
// key (<namespace>:<algorithm>:{<hash of identity>}), so a Charger and the
// Limiters of the same namespace and algorithm share state.
//
// One script touches one Redis Cluster slot. By default a call whose
// charges lie in several slots (on a Ring: several hash tags) is decided
// one slot at a time, in slot order, and when a later slot denies, the
// slots already spent are given back at once by a refund, so the call
// spends nothing; meanwhile other callers may see those units spent (the
// Charger may deny more than the limits say, never admit more).
// WithStrictSlots refuses such a call instead, and a Tagged view keeps
// every call in one slot. On a single Redis every call is one script.
//
// Each call is one decision, published once with the deciding charge's
// algorithm, key, cost and Result, as for a MultiLimiter.
//
// A Charger is safe for concurrent use. Create it once with NewCharger and
// share it.
type Charger struct {
	e    *engine
	keys *keyer
	// prefix holds, by algorithm, what precedes the identity's hash in a
	// key: "<namespace>:<algorithm>:{" (the hash is then the hash tag), or
	// in a Tagged view "<namespace>:<algorithm>:{<hash of the tag>}:".
	prefix [len(algorithmNames)]string
	tagged bool
}

// NewCharger returns a Charger on Redis through client. It accepts the
// options of New except WithAlgorithm (each Charge has its own), plus
// WithStrictSlots. The client stays the caller's.
func NewCharger(client redis.UniversalClient, opts ...Option) (*Charger, error) {
	if nilClient(client) {
		return nil, ErrNilClient
	}
	cfg, err := newConfig(forCharger, opts)
	if err != nil {
		return nil, err
	}
	c := &Charger{e: newEngine(client, cfg, chargeAlgorithms[:]...), keys: newKeyer("", cfg.secret)}
	for _, a := range chargeAlgorithms {
		c.prefix[a] = cfg.namespace + ":" + a.String() + ":{"
	}
	return c, nil
}

// Tagged returns a view of c whose keys all carry one Redis Cluster hash
// tag, made from tag as from an identity:
// <namespace>:<algorithm>:{<hash of tag>}:<hash of identity>. Every call of
// the view is one script in one slot, all or nothing on a Cluster too; the
// price is that every identity charged under the tag lives on one shard (a
// hot slot). The view's keys differ from c's, so the two do not share
// state; it shares everything else with c. The error wraps
// ErrInvalidIdentity for a bad tag.
func (c *Charger) Tagged(tag string) (*Charger, error) {
	t, err := c.keys.tag(tag)
	if err != nil {
		return nil, fmt.Errorf("%w (the tag)", err)
	}
	v := *c
	v.tagged = true
	for _, a := range chargeAlgorithms {
		v.prefix[a] = c.e.cfg.namespace + ":" + a.String() + ":" + t + "}:"
	}
	return &v, nil
}

// AllowAll spends every charge's cost if every charge fits, else nothing.
// The MultiResult's Quotas hold one Result per charge, in order (charges of
// one identity and algorithm are counted once, with the sum of their
// costs, and each gets that Result); its Result is the deciding charge's:
// when denied, the one with the longest RetryAfter; when allowed, the one
// with the smallest share of its burst left.
//
// The error wraps ErrInvalidLimit, ErrInvalidCost or ErrInvalidIdentity for
// bad input, before anything is decided: no charge or more than MaxQuotas,
// a limit its algorithm cannot enforce, a cost outside 0 to the burst, an
// algorithm other than TokenBucket, SlidingWindow or FixedWindow, a bad
// Name, or one identity and algorithm with two limits. It wraps
// ErrCrossSlot under WithStrictSlots. It is a *BackendError when Redis
// failed, and the Result is then the fail strategy's. The charges slice is
// not retained.
func (c *Charger) AllowAll(ctx context.Context, charges ...Charge) (MultiResult, error) {
	return c.run(ctx, charges, modeSpend, MultiResult{})
}

// PeekAll returns what AllowAll would decide now, without spending and
// without publishing an event.
func (c *Charger) PeekAll(ctx context.Context, charges ...Charge) (MultiResult, error) {
	return c.run(ctx, charges, modePeek, MultiResult{})
}

// RefundAll gives each charge's Cost back, for the AllowAll call that
// returned spent (the same charges, with the amounts to give back as
// costs), with the rules of Limiter.Refund: to the window that call was
// counted in, exactly once, never above a full burst, and nothing (no
// Redis call, a zero MultiResult) when spent spent nothing. A refund is not
// a decision: on a Redis failure the error is a *BackendError and the
// MultiResult is zero. It is published as one RefundEvent per charge with
// a non-zero cost.
func (c *Charger) RefundAll(ctx context.Context, spent MultiResult, charges ...Charge) (MultiResult, error) {
	if _, err := c.prepare(charges); err != nil {
		return MultiResult{}, err
	}
	if !spent.spent() {
		return MultiResult{}, nil
	}
	return c.run(ctx, charges, modeRefund, spent)
}

// Reset forgets the state of every charge's identity for its algorithm;
// only Identity and Algorithm of the charges are used.
func (c *Charger) Reset(ctx context.Context, charges ...Charge) error {
	byGroup := map[uint64][]string{}
	for i, ch := range charges {
		if err := checkChargeAlgorithm(i, ch.Algorithm); err != nil {
			return err
		}
		k, err := c.key(ch)
		if err != nil {
			return fmt.Errorf("%w (charge %d)", err, i)
		}
		g := c.e.group(k)
		byGroup[g] = append(byGroup[g], k)
	}
	// A multi-key DEL must stay within one slot on a Cluster.
	for _, keys := range byGroup {
		if err := c.e.del(ctx, keys); err != nil {
			return err
		}
	}
	return nil
}

// key returns the Redis key of ch, whose Algorithm is one of
// chargeAlgorithms.
func (c *Charger) key(ch Charge) (string, error) {
	return c.keys.format(ch.Identity, c.prefix[ch.Algorithm], !c.tagged)
}

func checkChargeAlgorithm(i int, a Algorithm) error {
	if !slices.Contains(chargeAlgorithms[:], a) {
		return fmt.Errorf("%w: charge %d: algorithm %v is not available to a Charger (token_bucket, sliding_window, fixed_window are)",
			ErrInvalidLimit, i, a)
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
}

// prepared is a validated call: its distinct quotas, which quota each
// charge counts in, and the quotas grouped by what one script may touch
// (one group off a Cluster or a Ring, or in a Tagged view), in group order.
type prepared struct {
	quotas []chargeQuota
	of     []int
	groups [][]int
}

func (c *Charger) prepare(charges []Charge) (prepared, error) {
	if len(charges) == 0 || len(charges) > MaxQuotas {
		return prepared{}, fmt.Errorf("%w: %d charges, want 1 to %d", ErrInvalidCost, len(charges), MaxQuotas)
	}
	p := prepared{of: make([]int, len(charges))}
	byKey := make(map[string]int, len(charges))
	for i, ch := range charges {
		if err := checkChargeAlgorithm(i, ch.Algorithm); err != nil {
			return prepared{}, err
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
				return prepared{}, fmt.Errorf("%w: charge %d and an earlier one charge the same identity with different limits (%v, %v)",
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
	groupOf := make([]uint64, len(p.quotas))
	one := true
	for i := range p.quotas {
		groupOf[i] = c.e.group(p.quotas[i].key)
		one = one && groupOf[i] == groupOf[0]
	}
	if one {
		all := make([]int, len(p.quotas))
		for i := range all {
			all[i] = i
		}
		p.groups = [][]int{all}
		return p, nil
	}
	if c.e.cfg.strictSlots {
		return prepared{}, fmt.Errorf("%w (use a Tagged view, or leave out WithStrictSlots)", ErrCrossSlot)
	}
	// Groups in a fixed order (by slot on a Cluster): two calls never take
	// the same groups in opposite orders.
	ids := slices.Clone(groupOf)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	p.groups = make([][]int, len(ids))
	for i, g := range groupOf {
		j, _ := slices.BinarySearch(ids, g)
		p.groups[j] = append(p.groups[j], i)
	}
	return p, nil
}

// run decides charges (AllowAll), peeks at them, or refunds them, group by
// group.
func (c *Charger) run(ctx context.Context, charges []Charge, md mode, spent MultiResult) (MultiResult, error) {
	p, err := c.prepare(charges)
	if err != nil {
		return MultiResult{}, err
	}
	var start time.Time
	if md != modePeek {
		start = c.e.startTimer()
	}
	results := make([]Result, len(p.quotas))
	if md == modeRefund {
		return c.refund(ctx, charges, p, spent, start, results)
	}

	allowed := true
	var berr *BackendError
	var done [][]int // groups spent so far, to give back if a later one denies
	for _, g := range p.groups {
		ok, err := c.evalGroup(ctx, p, g, md, time.Time{}, results)
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
	if md == modePeek {
		if berr != nil {
			return c.failResult(p, c.e.failResult(ctx, p.quotas[0].lim)), berr
		}
		out, _ := c.assemble(p, results, allowed)
		return out, nil
	}

	var out MultiResult
	i := 0 // the deciding quota; the first when Redis did not decide
	if berr == nil {
		out, i = c.assemble(p, results, allowed)
	}
	q := p.quotas[i]
	res, err := c.e.finish(ctx, decided{alg: q.alg, key: q.key, cost: q.cost, limit: q.lim}, start, out.Result, berr)
	if berr != nil {
		out = c.failResult(p, res)
	} else {
		out.Result = res
	}
	// The call spends nothing when it is denied: by a group (also in
	// shadow mode, which allows the call but spends what an enforced call
	// would), or by the fail strategy after a later group failed.
	if len(done) > 0 && (berr == nil && !allowed || berr != nil && !res.Allowed) {
		c.compensate(ctx, p, done, results)
	}
	return out, err
}

// refund runs RefundAll's scripts, one per group, each for the time its
// group was decided at, and publishes one RefundEvent per charge with a
// non-zero cost.
func (c *Charger) refund(ctx context.Context, charges []Charge, p prepared, spent MultiResult, start time.Time, results []Result) (MultiResult, error) {
	var berr *BackendError
	for _, g := range p.groups {
		at := spent.Time
		if i := firstCharge(p, g[0]); i < len(spent.Quotas) && !spent.Quotas[i].Time.IsZero() {
			at = spent.Quotas[i].Time
		}
		if _, berr = c.evalGroup(ctx, p, g, modeRefund, at, results); berr != nil {
			break
		}
	}
	for i, ch := range charges {
		if ch.Cost == 0 {
			continue
		}
		var r Result
		if berr == nil {
			r = results[p.of[i]]
		}
		c.e.publishRefund(ctx, ch.Algorithm, p.quotas[p.of[i]].key, ch.Cost, start, r, berr)
	}
	if berr != nil {
		return MultiResult{}, berr
	}
	out, _ := c.assemble(p, results, true)
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
// denied the call: one refund per group, exactly once, as RefundAll does,
// also when the caller's context has ended. A refund that fails leaves
// those units spent (an over-denial, never an over-admission); it is
// published as a RefundEvent with its error.
func (c *Charger) compensate(ctx context.Context, p prepared, done [][]int, results []Result) {
	ctx = context.WithoutCancel(ctx)
	for _, g := range done {
		start := c.e.startTimer()
		scratch := make([]Result, len(p.quotas))
		_, berr := c.evalGroup(ctx, p, g, modeRefund, results[g[0]].Time, scratch)
		for _, q := range g {
			if cq := p.quotas[q]; cq.cost > 0 {
				c.e.publishRefund(ctx, cq.alg, cq.key, cq.cost, start, scratch[q], berr)
			}
		}
	}
}

// evalGroup runs multi.lua on the quotas of group g (one slot) and stores
// each quota's Result in results. It reports whether the group allowed.
func (c *Charger) evalGroup(ctx context.Context, p prepared, g []int, md mode, spentAt time.Time, results []Result) (bool, *BackendError) {
	keys := make([]string, len(g), len(g)+1)
	args := make([]any, 3+5*len(g), 5+5*len(g))
	args[0], args[1], args[2] = len(g), int64(md), c.e.nowArg()
	for i, q := range g {
		cq := &p.quotas[q]
		keys[i] = cq.key
		base := 3 + 5*i
		args[base], args[base+1], args[base+2], args[base+3], args[base+4] = cq.alg.scriptID(), cq.pol.a, cq.pol.b, cq.pol.c, cq.cost
	}
	if md == modeRefund {
		// The refund's own key (in the first key's slot), the refunded
		// call's time, and how long Redis remembers the refund.
		keys = append(keys, newRefundKey(keys[0]))
		args = append(args, spentAt.UnixMicro(), c.e.refundMemoryMS())
	}
	reply, berr := c.e.script(ctx, multiScript, keys, args...)
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
// charge, and the deciding one (whose index it returns) as the call's.
// Quotas of groups that were not run (after a denying group) are marked
// allowed, with Reason quota and a zero Time: their cost did not deny.
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

// failResult is the MultiResult of a call Redis did not decide: res (the
// fail strategy's, or a denial of a caller that gave up) for the call and
// every charge, each with its own Limit.
func (c *Charger) failResult(p prepared, res Result) MultiResult {
	out := MultiResult{Result: res, Quotas: make([]Result, len(p.of))}
	for i, q := range p.of {
		out.Quotas[i] = res
		out.Quotas[i].Limit = p.quotas[q].lim
	}
	out.Limit = p.quotas[0].lim
	return out
}
