package ratelimit

// Reference models of every algorithm, for the differential test
// (differential_test.go). Each model is written from the algorithm's
// definition (Algorithm's doc, Refund's, the package doc and the comments
// of the Lua scripts, with the semantics of issue 11): it keeps the state
// in the form the definition needs (a token level, a window count, a log
// of spends, a set of leases) and answers in the same integer microseconds
// as the scripts, rounding where the definition rounds. Where a script
// computes in Lua doubles on purpose (a token level carried across a change
// of Per, a sliding window's estimate carried across a change of Per) the
// model does the same float64 operations, which IEEE 754 makes
// bit-identical. Where the moment a script rewrites its state shows in
// later answers (a bucket rewritten after a change of limit is floored
// again at the next one), the model rewrites at the same moment.
//
// A model knows no expiry: the harness deletes a key when the TTL Redis
// gave it has passed on the test clock, tells the model, and first asks it
// (irrelevantAt) whether that state was indeed no longer needed.
//
// Every model state records its birth as the scripts do (born, µs): the
// time of the call that wrote it when no state existed (none was ever
// written, or the script deleted it because it was full or empty, or a
// Reset or its expiry deleted it), kept by every rewrite. A refund of a
// spend decided before the birth gives nothing back: that spend was
// forgotten already. So the model drops its state exactly when Redis's key
// goes, never earlier or later: an expiry, harmless to every other answer,
// shows in a refund's.

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"
)

// Script modes, as the scripts number them.
const (
	mPeek   = 0
	mSpend  = 1
	mRefund = 2
)

// Lease operations, as concurrency.lua numbers them.
const (
	lPeek    = 0
	lAcquire = 1
	lRelease = 2
	lExtend  = 3
)

// modelReply is what every single-algorithm script answers.
type modelReply struct {
	allowed                           bool
	remaining, retryAfter, resetAfter int64
	now                               int64 // µs
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0 // every caller divides a non-negative amount
	}
	return (a + b - 1) / b
}

func gcdModel(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// ---- token bucket ----

// tbParams is a Limit in the token bucket's integers: a token is per units,
// the bucket gains rate units per µs and holds capacity×per units.
type tbParams struct {
	rate, per, burst, cap int64
}

func tbParamsOf(l Limit) tbParams {
	perUS := int64(l.Per / time.Microsecond)
	g := gcdModel(l.Rate, perUS)
	burst := l.Burst
	if burst == 0 {
		burst = l.Rate
	}
	return tbParams{rate: l.Rate / g, per: perUS / g, burst: burst, cap: burst * (perUS / g)}
}

// tbModel is one bucket: empty (full, nothing stored) or a level in units
// of the per it was written with, at a time, born at born. expiry is when
// the TTL given
// with it ends: after a change of limit, a call that spends nothing still
// rewrites the bucket (in the new limit's units, from now) when the new
// limit needs it for longer, and the rewrite shows in later answers (the
// level is floored again at the next change of per).
type tbModel struct {
	has                 bool
	level, last, expiry int64
	per                 int64
	born                int64
}

// tbView is the bucket as one call sees it at now.
type tbView struct {
	m            *tbModel
	p            tbParams
	level        int64
	now, born    int64
	stale, dirty bool
}

func (m *tbModel) load(p tbParams, now int64) *tbView {
	level, last, born := p.cap, now, now
	if m.has {
		level, last, born = m.level, m.last, m.born
		if m.per != p.per {
			// Another Limit since the level was written: the same
			// tokens in the new units, floored, computed in doubles
			// as the script does.
			level = int64(math.Floor(float64(level) / float64(m.per) * float64(p.per)))
		}
		level = max(0, min(level, p.cap))
		if now > last {
			// Refill at rate units per µs, up to the capacity.
			if now-last >= ceilDiv(p.cap-level, p.rate) {
				level = p.cap
			} else {
				level += (now - last) * p.rate
			}
		}
	}
	if last > now {
		now = last
	}
	// The state outlives its TTL under p: compared in doubles, as the
	// script compares.
	stale := m.has && level < p.cap && float64(now)+float64(p.cap-level)/float64(p.rate) > float64(m.expiry)
	return &tbView{m: m, p: p, level: level, now: now, born: born, stale: stale}
}

func (v *tbView) fits(cost int64) bool { return v.level >= cost*v.p.per }
func (v *tbView) spend(cost int64) {
	if cost > 0 {
		v.level -= cost * v.p.per
		v.dirty = true
	}
}

// refund adds the tokens back, never above the capacity, for a reservation
// made since the bucket's birth: an older one's tokens came back already
// (the bucket refilled, or was Reset).
func (v *tbView) refund(cost, at int64) {
	if cost > 0 && v.level < v.p.cap && at >= v.born {
		v.level = min(v.p.cap, v.level+cost*v.p.per)
		v.dirty = true
	}
}

// touch: a call that is not a Peek rewrites a bucket that would outlive
// its TTL under the limit in force.
func (v *tbView) touch() {
	if v.stale {
		v.dirty = true
	}
}

func (v *tbView) report(cost int64, ok bool) (remaining, retry, reset int64) {
	if !ok {
		retry = ceilDiv(cost*v.p.per-v.level, v.p.rate)
	}
	return v.level / v.p.per, retry, ceilDiv(v.p.cap-v.level, v.p.rate)
}

func (v *tbView) commit() {
	if !v.dirty {
		return
	}
	if v.level >= v.p.cap {
		*v.m = tbModel{} // a full bucket is no state
		return
	}
	ttl := max(1, int64(math.Ceil(float64(v.p.cap-v.level)/float64(v.p.rate)/1000))) // ms
	*v.m = tbModel{has: true, level: v.level, last: v.now, per: v.p.per, expiry: v.now + ttl*1000, born: v.born}
}

func (v *tbView) time() int64 { return v.now }

// irrelevantAt reports whether the bucket is full at t under p: its state
// no longer changes any answer under p, so it may expire.
func (m *tbModel) irrelevantAt(p tbParams, t int64) bool {
	return !m.has || m.load(p, t).level >= p.cap
}

// ---- fixed window ----

// fwModel is the count c of the window [s, s+p) (µs), born at born, or
// nothing.
type fwModel struct {
	has           bool
	s, p, c, born int64
}

type fwView struct {
	m                    *fwModel
	quota, window, start int64
	spent, now, born     int64
	dirty                bool
}

func (m *fwModel) load(quota, window, now int64) *fwView {
	born := now
	if m.has {
		born = m.born
	}
	if m.has && m.s > now {
		now = m.s
	}
	start := now - now%window
	v := &fwView{m: m, quota: quota, window: window, start: start, now: now, born: born}
	// The stored count still counts when its window overlaps the current
	// one: the same window, or one of another Per.
	if m.has && m.s < start+window && m.s+m.p > start {
		v.spent = m.c
	}
	return v
}

// touch: at the first non-Peek call after a change of Per the count that
// still counts becomes the current window's.
func (v *fwView) touch() {
	if v.spent > 0 && v.m.p != v.window {
		v.dirty = true
	}
}

func (v *fwView) fits(cost int64) bool { return cost == 0 || v.spent+cost <= v.quota }
func (v *fwView) spend(cost int64) {
	if cost > 0 {
		v.spent += cost
		v.dirty = true
	}
}

// refund takes the units off the stored count, only for a reservation made
// in the window it counts (the current one, or after a change of Per the
// old window whose count is carried): an earlier window's is forgotten, and
// so is one made before the state's birth.
func (v *fwView) refund(cost, at int64) {
	if cost > 0 && v.spent > 0 && at >= v.m.s && at < v.m.s+v.m.p && at >= v.born {
		v.spent = max(0, v.spent-cost)
		v.dirty = true
	}
}

func (v *fwView) report(_ int64, ok bool) (remaining, retry, reset int64) {
	end := v.start + v.window - v.now
	if !ok {
		retry = end
	}
	if v.spent > 0 {
		reset = end
	}
	return max(0, v.quota-v.spent), retry, reset
}

func (v *fwView) commit() {
	if !v.dirty {
		return
	}
	if v.spent == 0 {
		*v.m = fwModel{}
		return
	}
	*v.m = fwModel{has: true, s: v.start, p: v.window, c: v.spent, born: v.born}
}

func (v *fwView) time() int64 { return v.now }

func (m *fwModel) irrelevantAt(window, t int64) bool {
	return !m.has || m.c == 0 || m.load(1, window, t).spent == 0
}

// ---- sliding window ----

// swTick is the step in µs in which the previous window is weighed: 1 µs
// unless rate × window could pass 2^53, else the smallest power of ten
// dividing the window that keeps it exact, else the whole window.
func swTick(rate, perUS int64) int64 {
	for tick := int64(1); tick <= perUS && perUS%tick == 0; tick *= 10 {
		if perUS/tick <= maxExact/rate {
			return tick
		}
	}
	return perUS
}

// swModel is the count c of the window starting at s and q of the one
// before it, windows of length p µs, born at born.
type swModel struct {
	has              bool
	s, c, q, p, born int64
}

type swView struct {
	m                          *swModel
	quota, ticks, tick, window int64
	start, elapsed, cur, prev  int64
	now, born                  int64
	carried, dirty             bool
}

func (m *swModel) load(quota, perUS, now int64) *swView {
	tick := swTick(quota, perUS)
	v := &swView{m: m, quota: quota, tick: tick, ticks: perUS / tick, window: perUS, born: now}
	if m.has {
		v.born = m.born
	}
	if m.has && m.s > now {
		now = m.s
	}
	v.now = now
	v.start = now - now%v.window
	if m.has {
		switch {
		case m.p != v.window:
			// Another Per: the old window's estimate at now counts as
			// spent in the current window (rounded up, in doubles: the
			// product may leave the exact range).
			ostart := now - now%m.p
			if m.s == ostart {
				v.cur = int64(math.Ceil(float64(m.q)*float64(m.p-(now-m.s))/float64(m.p))) + m.c
			} else if m.s == ostart-m.p {
				v.cur = int64(math.Ceil(float64(m.c) * float64(m.p-(now-ostart)) / float64(m.p)))
			}
			v.carried = true
		case m.s == v.start:
			v.cur, v.prev = m.c, m.q
		case m.s == v.start-v.window:
			v.prev = m.c
		}
	}
	// Above a lowered quota, counts count as the whole quota.
	v.cur, v.prev = min(v.cur, quota), min(v.prev, quota)
	v.elapsed = (now - v.start) / tick
	return v
}

// weighted is the previous window's count weighed by the share of it the
// sliding window still covers, rounded up.
func (v *swView) weighted(n int64) int64 { return ceilDiv(n*(v.ticks-v.elapsed), v.ticks) }

func (v *swView) estimate() int64 { return v.weighted(v.prev) + v.cur }

// touch: at the first non-Peek call after a change of Per the carried
// estimate becomes the current window's count.
func (v *swView) touch() {
	if v.carried {
		v.dirty = true
	}
}

func (v *swView) fits(cost int64) bool { return cost == 0 || v.estimate()+cost <= v.quota }
func (v *swView) spend(cost int64) {
	if cost > 0 {
		v.cur += cost
		v.dirty = true
	}
}

// refund takes the units off the window the reservation was made in, the
// current or the previous one; from an older one nothing comes back, nor
// for a reservation made before the state's birth.
func (v *swView) refund(cost, at int64) {
	if cost <= 0 || at < v.born {
		return
	}
	switch {
	case at >= v.start && at < v.start+v.window:
		if v.cur > 0 {
			v.cur = max(0, v.cur-cost)
			v.dirty = true
		}
	case at >= v.start-v.window && at < v.start:
		if v.prev > 0 {
			v.prev = max(0, v.prev-cost)
			v.dirty = true
		}
	}
}

// firstTick is the first tick of a window at which weighted(n) <= room.
func (v *swView) firstTick(n, room int64) int64 {
	if n == 0 {
		return 0
	}
	k := room * v.ticks / n
	if k >= v.ticks {
		return 0
	}
	return v.ticks - k
}

func (v *swView) report(cost int64, ok bool) (remaining, retry, reset int64) {
	est := v.estimate()
	if !ok {
		var at int64
		if v.cur+cost <= v.quota {
			at = v.start + v.firstTick(v.prev, v.quota-v.cur-cost)*v.tick
		} else {
			at = v.start + v.window + v.firstTick(v.cur, v.quota-cost)*v.tick
		}
		retry = at - v.now
	}
	switch {
	case v.cur > 0:
		reset = v.start + 2*v.window - v.now
	case est > 0:
		reset = v.start + v.window - v.now
	}
	return max(0, v.quota-est), retry, reset
}

func (v *swView) commit() {
	if !v.dirty {
		return
	}
	if v.cur+v.prev == 0 {
		*v.m = swModel{}
		return
	}
	*v.m = swModel{has: true, s: v.start, c: v.cur, q: v.prev, p: v.window, born: v.born}
}

func (v *swView) time() int64 { return v.now }

func (m *swModel) irrelevantAt(perUS, t int64) bool {
	if !m.has || m.c+m.q == 0 {
		return true
	}
	v := m.load(maxExact/perUS, perUS, t) // a quota too large to cap anything
	return v.cur+v.prev == 0
}

// ---- the quota view a multi call works on ----

// quotaView is one quota of a multi call (and the body of a single call):
// loaded at now, checked, spent or refunded, reported, written back.
type quotaView interface {
	touch()
	fits(cost int64) bool
	spend(cost int64)
	refund(cost, at int64)
	report(cost int64, ok bool) (remaining, retry, reset int64)
	commit()
	time() int64
}

// single runs one call of a single-algorithm limiter on v: mode as the
// scripts number them, at the reservation's time for a refund.
func single(v quotaView, cost int64, mode int, at int64) modelReply {
	if mode != mPeek {
		v.touch()
	}
	ok := true
	switch mode {
	case mRefund:
		v.refund(cost, at)
	default:
		ok = v.fits(cost)
		if ok && mode == mSpend {
			v.spend(cost)
		}
	}
	v.commit()
	rem, retry, reset := v.report(cost, ok)
	return modelReply{allowed: ok, remaining: rem, retryAfter: retry, resetAfter: reset, now: v.time()}
}

// ---- sliding log ----

// slModel is the log of spends: units per time (µs), oldest first, born at
// born while it holds any. Entries logged at the same time are one entry
// here: nothing observable tells them apart (they expire together, and a
// refund takes from all of them). Entries past the window stay until a
// call that may write drops them, as in Redis: while any is left, the log
// exists and keeps its birth.
type slModel struct {
	entries []slEntry
	born    int64
}

type slEntry struct{ t, units int64 }

func (m *slModel) newest() int64 {
	if len(m.entries) == 0 {
		return 0
	}
	return m.entries[len(m.entries)-1].t
}

func (m *slModel) call(quota, window, cost int64, mode int, now, at int64) modelReply {
	born := now
	if len(m.entries) > 0 {
		born = m.born
	}
	if len(m.entries) > 0 && m.newest() > now {
		now = m.newest()
	}
	cutoff := now - window
	// Entries at or before now - window no longer count; a call that may
	// write drops them.
	var n int64
	live := m.entries[:0:0]
	for _, e := range m.entries {
		if e.t > cutoff {
			n += e.units
			live = append(live, e)
		}
	}
	if mode != mPeek {
		m.entries = live
	}
	ok := true
	switch mode {
	case mRefund:
		// Up to cost units off the spends logged at the reservation's
		// time, while they are still in the log, for a reservation made
		// since the log's birth.
		if cost > 0 && at >= born {
			for i, e := range m.entries {
				if e.t == at && e.t > cutoff {
					back := min(cost, e.units)
					n -= back
					if e.units == back {
						m.entries = append(m.entries[:i:i], m.entries[i+1:]...)
					} else {
						m.entries[i].units -= back
					}
					break
				}
			}
		}
	default:
		ok = cost == 0 || n+cost <= quota
		if ok && mode == mSpend && cost > 0 {
			if k := len(m.entries); k > 0 && m.entries[k-1].t == now {
				m.entries[k-1].units += cost
			} else {
				m.entries = append(m.entries, slEntry{now, cost})
			}
			n += cost
		}
	}
	if len(m.entries) > 0 {
		m.born = born
	} else {
		m.born = 0 // no log: the next spend starts one
	}
	r := modelReply{allowed: ok, now: now, remaining: max(0, quota-n)}
	if !ok {
		// When the oldest spends have expired enough for the cost to fit.
		need, freed := n+cost-quota, int64(0)
		for _, e := range m.entries {
			if e.t <= cutoff {
				continue
			}
			freed += e.units
			if freed >= need {
				r.retryAfter = e.t + window - now
				break
			}
		}
		if r.retryAfter <= 0 {
			r.retryAfter = window
		}
	}
	if n > 0 {
		r.resetAfter = m.newest() + window - now
	}
	return r
}

func (m *slModel) irrelevantAt(window, t int64) bool {
	return len(m.entries) == 0 || m.newest()+window <= t
}

// ---- concurrency leases ----

type leaseEntry struct{ weight, expiry int64 }

// leaseModel is the leases held: weight and expiry (µs) by lease id.
type leaseModel struct {
	leases map[string]leaseEntry
}

func (m *leaseModel) call(maxN, ttl int64, id string, weight int64, op int, now int64) modelReply {
	if m.leases == nil {
		m.leases = map[string]leaseEntry{}
	}
	var n int64
	for _, l := range m.leases {
		if l.expiry > now {
			n += l.weight
		}
	}
	if op != lPeek {
		// A lease whose expiry passed is gone.
		for k, l := range m.leases {
			if l.expiry <= now {
				delete(m.leases, k)
			}
		}
	}
	held := func() bool {
		l, ok := m.leases[id]
		return ok && l.weight == weight
	}
	ok := false
	switch op {
	case lRelease:
		if held() {
			delete(m.leases, id)
			n -= weight
			ok = true
		}
	case lExtend:
		if held() {
			m.leases[id] = leaseEntry{weight, now + ttl}
			ok = true
		}
	case lAcquire:
		switch {
		case held():
			ok = true // the same acquire again: granted once
		case n+weight <= maxN:
			m.leases[id] = leaseEntry{weight, now + ttl}
			n += weight
			ok = true
		}
	case lPeek:
		ok = n+weight <= maxN
	}
	var last int64
	for _, l := range m.leases {
		last = max(last, l.expiry)
	}
	r := modelReply{allowed: ok, now: now, remaining: max(0, maxN-n)}
	if !ok && (op == lPeek || op == lAcquire) {
		// Capacity comes back when the soonest-expiring leases expire.
		var live []leaseEntry
		for _, l := range m.leases {
			if l.expiry > now {
				live = append(live, l)
			}
		}
		sort.Slice(live, func(i, j int) bool { return live[i].expiry < live[j].expiry })
		need, freed := n+weight-maxN, int64(0)
		for _, l := range live {
			freed += l.weight
			if freed >= need {
				r.retryAfter = l.expiry - now
				break
			}
		}
		if r.retryAfter <= 0 {
			r.retryAfter = ttl
		}
	}
	if n > 0 && last > now {
		r.resetAfter = last - now
	}
	return r
}

func (m *leaseModel) irrelevantAt(t int64) bool {
	for _, l := range m.leases {
		if l.expiry > t {
			return false
		}
	}
	return true
}

// ---- one identity's state under one algorithm ----

func perUSOf(l Limit) int64 { return int64(l.Per / time.Microsecond) }

// quotaModel is the state of one identity under one algorithm: a single
// limiter's, or one quota of a multi limiter.
type quotaModel struct {
	alg Algorithm
	tb  tbModel
	sw  swModel
	fw  fwModel
	sl  slModel
}

func (q *quotaModel) view(l Limit, now int64) quotaView {
	switch q.alg {
	case TokenBucket:
		return q.tb.load(tbParamsOf(l), now)
	case SlidingWindow:
		return q.sw.load(l.Rate, perUSOf(l), now)
	case FixedWindow:
		return q.fw.load(l.Rate, perUSOf(l), now)
	}
	panic("quotaModel.view: " + q.alg.String())
}

// call is one call of a single-algorithm limiter; at is the reservation's
// time for a refund.
func (q *quotaModel) call(l Limit, cost int64, mode int, now, at int64) modelReply {
	if q.alg == SlidingLog {
		return q.sl.call(l.Rate, perUSOf(l), cost, mode, now, at)
	}
	return single(q.view(l, now), cost, mode, at)
}

// irrelevantAt reports whether the state no longer changes any answer at t
// under l, and so may expire.
func (q *quotaModel) irrelevantAt(l Limit, t int64) bool {
	switch q.alg {
	case TokenBucket:
		return q.tb.irrelevantAt(tbParamsOf(l), t)
	case SlidingWindow:
		return q.sw.irrelevantAt(perUSOf(l), t)
	case FixedWindow:
		return q.fw.irrelevantAt(perUSOf(l), t)
	}
	return q.sl.irrelevantAt(perUSOf(l), t)
}

func (q *quotaModel) clear() { *q = quotaModel{alg: q.alg} }

// multiReply is what multi.lua answers: the call's decision and time, and
// each quota's own (allowed: its cost fits).
type multiReply struct {
	allowed bool
	now     int64
	quotas  []modelReply
}

// multiCall is one all-or-nothing call over the quotas of one identity:
// every quota is checked, and the costs are spent only if every one fits
// (a cost of 0 always does); a refund gives every amount back.
func multiCall(qs []*quotaModel, lims []Limit, costs []int64, mode int, now, at int64) multiReply {
	views := make([]quotaView, len(qs))
	fits := make([]bool, len(qs))
	all := true
	for i, q := range qs {
		views[i] = q.view(lims[i], now)
		if mode != mPeek {
			views[i].touch()
		}
		fits[i] = mode == mRefund || views[i].fits(costs[i])
		all = all && fits[i]
	}
	out := multiReply{allowed: all, now: now, quotas: make([]modelReply, len(qs))}
	for i, v := range views {
		switch {
		case mode == mRefund:
			v.refund(costs[i], at)
		case mode == mSpend && all:
			v.spend(costs[i])
		}
		v.commit()
		rem, retry, reset := v.report(costs[i], fits[i])
		out.quotas[i] = modelReply{allowed: fits[i], remaining: rem, retryAfter: retry, resetAfter: reset, now: v.time()}
	}
	return out
}

// multiBinding is the quota a MultiResult reports, as MultiLimiter
// documents it: when denied, the denying quota with the longest RetryAfter;
// when allowed, the quota with the smallest share of its capacity left
// among those with a cost; the first on a tie, quota 0 when none qualifies.
func multiBinding(qs []Result, caps, costs []int64, allowed bool) int {
	best := -1
	for i, r := range qs {
		switch {
		case !allowed:
			if !r.Allowed && (best < 0 || r.RetryAfter > qs[best].RetryAfter) {
				best = i
			}
		case costs[i] == 0:
		case best < 0 || max(r.Remaining, 0)*caps[best] < max(qs[best].Remaining, 0)*caps[i]:
			best = i
		}
	}
	return max(best, 0)
}

// TestModelByHand checks the models against values worked out by hand from
// the algorithms' definitions, without Redis: the differential test
// compares Redis with them, so they must be right on their own.
func TestModelByHand(t *testing.T) {
	check := func(what string, got, want modelReply) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
	}
	const s = 1_000_000 // µs
	t.Run("token bucket", func(t *testing.T) {
		q := &quotaModel{alg: TokenBucket}
		l := Limit{Rate: 10, Per: time.Second} // a token every 100 ms
		check("all 10", q.call(l, 10, mSpend, 0, 0), modelReply{true, 0, 0, s, 0})
		check("one more", q.call(l, 1, mSpend, 0, 0), modelReply{false, 0, 100_000, s, 0})
		check("half a token later", q.call(l, 1, mSpend, 50_000, 0), modelReply{false, 0, 50_000, 950_000, 50_000})
		check("cost 0", q.call(l, 0, mSpend, 50_000, 0), modelReply{true, 0, 0, 950_000, 50_000})
		check("a token later", q.call(l, 1, mSpend, 100_000, 0), modelReply{true, 0, 0, s, 100_000})
		check("refund 5", q.call(l, 5, mRefund, 100_000, 0), modelReply{true, 5, 0, 500_000, 100_000})
		check("refund above the burst", q.call(l, 9, mRefund, 100_000, 0), modelReply{true, 10, 0, 0, 100_000})
		check("spend 3", q.call(l, 3, mSpend, 100_000, 0), modelReply{true, 7, 0, 300_000, 100_000})
		// A change of limit keeps the tokens (at most the new burst): 1
		// token of 100 000 units becomes 1 of 1 000 000, then refills at
		// 3 units a µs for 50 ms.
		check("spend 6", q.call(l, 6, mSpend, 100_000, 0), modelReply{true, 1, 0, 900_000, 100_000})
		l3 := Limit{Rate: 3, Per: time.Second}
		check("another limit", q.call(l3, 0, mPeek, 150_000, 0), modelReply{true, 1, 0, 616_667, 150_000})
	})
	t.Run("fixed window", func(t *testing.T) {
		q := &quotaModel{alg: FixedWindow}
		l := Limit{Rate: 3, Per: time.Second}
		check("all 3", q.call(l, 3, mSpend, 500_000, 0), modelReply{true, 0, 0, 500_000, 500_000})
		check("one more", q.call(l, 1, mSpend, 600_000, 0), modelReply{false, 0, 400_000, 400_000, 600_000})
		check("cost 0", q.call(l, 0, mSpend, 600_000, 0), modelReply{true, 0, 0, 400_000, 600_000})
		check("refund of this window's", q.call(l, 1, mRefund, 700_000, 500_000), modelReply{true, 1, 0, 300_000, 700_000})
		check("next window", q.call(l, 1, mSpend, s, 0), modelReply{true, 2, 0, s, s})
		check("refund of the last window's", q.call(l, 1, mRefund, s+1, 500_000), modelReply{true, 2, 0, s - 1, s + 1})
		// A window of 10 s: the 1 unit spent in [1 s, 2 s) still counts,
		// and is moved into [0, 10 s) by the first call that is not a Peek.
		l10 := Limit{Rate: 3, Per: 10 * time.Second}
		check("longer window", q.call(l10, 0, mSpend, 2*s, 0), modelReply{true, 2, 0, 8 * s, 2 * s})
		// A rewrite keeps the state's birth, the first call's time.
		if q.fw != (fwModel{has: true, s: 0, p: 10 * s, c: 1, born: 500_000}) {
			t.Errorf("state after the move: %+v", q.fw)
		}
		// Lowered to 1: the count of 1 fills it.
		check("downgrade", q.call(Limit{Rate: 1, Per: 10 * time.Second}, 1, mSpend, 2*s, 0), modelReply{false, 0, 8 * s, 8 * s, 2 * s})
	})
	t.Run("sliding window", func(t *testing.T) {
		q := &quotaModel{alg: SlidingWindow}
		l := Limit{Rate: 4, Per: time.Millisecond} // windows of 1000 µs
		check("all 4", q.call(l, 4, mSpend, 250, 0), modelReply{true, 0, 0, 1750, 250})
		// In the next window, 250 µs in: the previous 4 weigh
		// ceil(4 × 750/1000) = 3.
		check("2 do not fit", q.call(l, 2, mSpend, 1250, 0), modelReply{false, 1, 250, 750, 1250})
		check("1 does", q.call(l, 1, mSpend, 1250, 0), modelReply{true, 0, 0, 1750, 1250})
		// prev 4 - 2 weighs ceil(2 × 700/1000) = 2, plus cur 1.
		check("refund of the previous window's", q.call(l, 2, mRefund, 1300, 250), modelReply{true, 1, 0, 1700, 1300})
		check("refund of an older one", q.call(l, 1, mRefund, 2100, 250), modelReply{true, 3, 0, 900, 2100})
	})
	t.Run("sliding log", func(t *testing.T) {
		q := &quotaModel{alg: SlidingLog}
		l := Limit{Rate: 3, Per: time.Millisecond}
		check("2 at 0", q.call(l, 2, mSpend, 0, 0), modelReply{true, 1, 0, 1000, 0})
		check("1 at 400", q.call(l, 1, mSpend, 400, 0), modelReply{true, 0, 0, 1000, 400})
		check("1 at 500", q.call(l, 1, mSpend, 500, 0), modelReply{false, 0, 500, 900, 500})
		check("refund 1 of the spend at 0", q.call(l, 1, mRefund, 600, 0), modelReply{true, 1, 0, 800, 600})
		check("refund of a spend never made", q.call(l, 1, mRefund, 600, 1), modelReply{true, 1, 0, 800, 600})
		check("at 1000 the spend at 0 is gone", q.call(l, 2, mSpend, 1000, 0), modelReply{true, 0, 0, 1000, 1000})
	})
	t.Run("leases", func(t *testing.T) {
		var m leaseModel
		check("a", m.call(3, 1000, "a", 2, lAcquire, 0), modelReply{true, 1, 0, 1000, 0})
		check("b waits for a", m.call(3, 1000, "b", 2, lAcquire, 100), modelReply{false, 1, 900, 900, 100})
		check("a again", m.call(3, 1000, "a", 2, lAcquire, 100), modelReply{true, 1, 0, 900, 100})
		check("extend a", m.call(3, 1000, "a", 2, lExtend, 200), modelReply{true, 1, 0, 1000, 200})
		check("a expired", m.call(3, 1000, "b", 2, lAcquire, 1200), modelReply{true, 1, 0, 1000, 1200})
		check("release a", m.call(3, 1000, "a", 2, lRelease, 1300), modelReply{false, 1, 0, 900, 1300})
	})
	t.Run("birth", func(t *testing.T) {
		// A state dropped (its key expired, or a Reset) and written
		// again is born anew: a refund of a spend before that gives
		// nothing back, one of a spend since does.
		l := Limit{Rate: 4, Per: time.Second}
		for _, alg := range []Algorithm{TokenBucket, FixedWindow, SlidingWindow, SlidingLog} {
			q := &quotaModel{alg: alg}
			q.call(l, 1, mSpend, 100, 0)
			q.clear()
			r := q.call(l, 2, mSpend, 200, 0)
			check(alg.String()+": refund of the spend at 100", q.call(l, 1, mRefund, 300, 100), modelReply{true, r.remaining, 0, r.resetAfter - 100, 300})
			back := q.call(l, 1, mRefund, 300, 200)
			if back.remaining != r.remaining+1 {
				t.Errorf("%v: refund of the spend at 200: %+v, want remaining %d", alg, back, r.remaining+1)
			}
			// A spend in the birth's µs is the state's own.
			q.clear()
			q.call(l, 1, mSpend, 400, 0)
			if back := q.call(l, 1, mRefund, 400, 400); back.remaining != 4 {
				t.Errorf("%v: refund of the spend at the birth: %+v, want remaining 4", alg, back)
			}
		}
		multi := []*quotaModel{{alg: TokenBucket}, {alg: FixedWindow}}
		lims := []Limit{l, l}
		multiCall(multi, lims, []int64{1, 1}, mSpend, 100, 0)
		multi[0].clear() // the bucket's key expired; the window's did not
		multiCall(multi, lims, []int64{1, 1}, mSpend, 200, 0)
		r := multiCall(multi, lims, []int64{1, 1}, mRefund, 300, 100)
		if r.quotas[0].remaining != 3 || r.quotas[1].remaining != 3 {
			t.Errorf("multi refund of a spend before the bucket's birth: %+v, want 3 left on both", r)
		}
	})
	t.Run("multi", func(t *testing.T) {
		qs := []*quotaModel{{alg: TokenBucket}, {alg: FixedWindow}}
		lims := []Limit{{Rate: 2, Per: time.Second}, {Rate: 3, Per: time.Second}}
		r := multiCall(qs, lims, []int64{2, 1}, mSpend, 0, 0)
		if !r.allowed || r.quotas[0].remaining != 0 || r.quotas[1].remaining != 2 {
			t.Errorf("first: %+v", r)
		}
		// The bucket is empty: nothing is spent on the window.
		r = multiCall(qs, lims, []int64{1, 1}, mSpend, 0, 0)
		if r.allowed || r.quotas[0].allowed || !r.quotas[1].allowed || r.quotas[1].remaining != 2 {
			t.Errorf("denied: %+v", r)
		}
		// A cost of 0 on the bucket always fits.
		r = multiCall(qs, lims, []int64{0, 2}, mSpend, 0, 0)
		if !r.allowed || r.quotas[1].remaining != 0 {
			t.Errorf("cost 0 on the bucket: %+v", r)
		}
	})
}

func (q *quotaModel) String() string {
	switch q.alg {
	case TokenBucket:
		return fmt.Sprintf("%s %+v", q.alg, q.tb)
	case SlidingWindow:
		return fmt.Sprintf("%s %+v", q.alg, q.sw)
	case FixedWindow:
		return fmt.Sprintf("%s %+v", q.alg, q.fw)
	}
	return fmt.Sprintf("%s %+v born %d", q.alg, q.sl.entries, q.sl.born)
}
