package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// diffEnv is the real Redis of a differential test: one redis-server, shared
// by every run and every shrinking attempt (FLUSHDB between them), reached
// by the limiters through a wireProxy and by the harness directly.
type diffEnv struct {
	admin  *redis.Client
	proxy  *wireProxy
	client *redis.Client
	clock  atomic.Int64 // µs: the time the limiters' scripts are given
}

func newDiffEnv(t *testing.T) *diffEnv {
	t.Helper()
	srv := redistest.Start(t)
	admin := srv.Client(t)
	e := &diffEnv{admin: admin, proxy: newWireProxy(t, admin, diffScripts, diffFunctions)}
	// Protocol 2: the proxy frames RESP2 only. Retries are go-redis's
	// defaults (MaxRetries 3): a lost reply is resent as in production.
	e.client = redis.NewClient(&redis.Options{Addr: e.proxy.addr(), ContextTimeoutEnabled: true, Protocol: 2})
	t.Cleanup(func() { _ = e.client.Close() })
	return e
}

func (e *diffEnv) now() time.Time { return time.UnixMicro(e.clock.Load()) }

// diffFailure is the first check a run failed.
type diffFailure struct {
	step  int    // index in the scenario's steps
	class string // result, lost-reply, no-ttl, short-ttl, expired-early, ledger, calls, harness, error
	what  string // the operation (and field): the symptom shrinking keeps
	msg   string
	state string   // Redis's and the model's state of the identity, for a wrong result
	trace []string // what each step of the failing run returned
}

func (f *diffFailure) symptom() string { return f.class + "/" + f.what }

// keyOwner says whose state a Redis key holds.
type keyOwner struct {
	who, quota int
	state      bool // false for a summary (":meta") that the scripts rebuild when lost
	label      string
	// minTTL is the least TTL (ms) a script may give the key: 1 for a
	// token bucket's SET PX, 2 for every PEXPIRE (Redis 7.0 can delete a
	// key given PEXPIRE 1 at once).
	minTTL int64
}

// minTTLOf is the keyOwner.minTTL of the keys of alg.
func minTTLOf(alg Algorithm) int64 {
	if alg == TokenBucket {
		return 1
	}
	return 2
}

// vexpiry is the virtual expiry of a key: when its TTL, set by a script at
// step on the test clock, passes on the test clock.
type vexpiry struct {
	at, ttl int64 // µs, ms
	step    int
}

// diffOutcome is what a step returned, for the steps that refer to it.
type diffOutcome struct {
	who      int
	t        int64 // the step's clock
	costs    []int64
	refunded []int64
	res      Result
	multi    MultiResult
	lease    *Lease
	multiOK  bool
	leaseMax int64
}

// diffRunner runs one scenario: the limiters, the models, the virtual
// expiry of every key and the ledger.
type diffRunner struct {
	e   *diffEnv
	sc  *diffScenario
	ctx context.Context
	now int64

	ids   []string
	lim   []*Limiter
	multi []*MultiLimiter
	conc  []*ConcurrencyLimiter
	bases struct {
		lim   *Limiter
		multi *MultiLimiter
		conc  *ConcurrencyLimiter
	}
	names []string  // multi quota names
	cur   [][]Limit // the limits in force, per identity (per quota; leases: Rate is max)
	last  [][]Limit // the limits of the last call that could set a TTL
	qm    [][]*quotaModel
	lm    []leaseModel
	keys  map[string]keyOwner
	vexp  map[string]vexpiry
	// present holds the keys the last script left, less those the harness
	// deleted since: the next script must find them all.
	present map[string]bool
	out     map[int]*diffOutcome
	led     diffLedger
	trace   []string // per step, what Redis answered
	who     int      // the identity of the step running
}

const diffNamespace = "model"

// run runs sc on fresh keys and returns its first failure, nil if none,
// with what each step returned.
func (e *diffEnv) run(sc *diffScenario) (*diffFailure, []string) {
	r := &diffRunner{e: e, sc: sc, ctx: context.Background(), keys: map[string]keyOwner{},
		vexp: map[string]vexpiry{}, present: map[string]bool{}, out: map[int]*diffOutcome{}, trace: make([]string, len(sc.steps))}
	if err := e.admin.FlushDB(r.ctx).Err(); err != nil {
		return &diffFailure{step: -1, class: "error", what: "setup", msg: "FLUSHDB: " + err.Error()}, r.trace
	}
	e.proxy.armed.Store(0)
	e.proxy.take()
	r.now = diffBase.UnixMicro() + sc.offset
	e.clock.Store(r.now)
	if err := r.setup(); err != nil {
		return &diffFailure{step: -1, class: "error", what: "setup", msg: err.Error()}, r.trace
	}
	for i, s := range sc.steps {
		r.who = s.who
		if sc.tamper != nil {
			if err := sc.tamper(r, s); err != nil {
				return &diffFailure{step: i, class: "error", what: "tamper", msg: err.Error()}, r.trace
			}
		}
		if f := r.step(i, s); f != nil {
			f.step, f.trace = i, r.trace
			if f.class == "result" || f.class == "lost-reply" {
				f.state = r.dump(r.who)
			}
			return f, r.trace
		}
	}
	return nil, r.trace
}

func (r *diffRunner) setup() error {
	sc := r.sc
	opts := []Option{WithNamespace(diffNamespace), WithTimeout(5 * time.Second), WithPipelining(false), withClock(r.e.now)}
	if sc.shadow {
		opts = append(opts, WithShadow())
	}
	n := sc.ids
	r.ids = make([]string, n)
	r.cur = make([][]Limit, n)
	r.last = make([][]Limit, n)
	r.qm = make([][]*quotaModel, n)
	r.lm = make([]leaseModel, n)
	r.led = diffLedger{accts: map[[2]int]*ledgerAccount{}}
	for i := range n {
		r.ids[i] = "model-identity-" + strconv.Itoa(i)
		r.cur[i] = slices.Clone(sc.initial[i])
		r.last[i] = make([]Limit, len(sc.initial[i]))
	}
	var err error
	switch sc.kind {
	case kindLeases:
		r.bases.conc, err = NewConcurrency(r.e.client, sc.initial[0][0].Rate,
			append(opts, WithLeaseTTL(time.Duration(sc.leaseTTL)*time.Microsecond))...)
		if err != nil {
			return err
		}
		r.conc = make([]*ConcurrencyLimiter, n)
		for i := range n {
			if r.conc[i], err = r.bases.conc.WithMax(sc.initial[i][0].Rate); err != nil {
				return err
			}
			key, _ := r.bases.conc.Key(r.ids[i])
			r.keys[key] = keyOwner{who: i, state: true, label: fmt.Sprintf("id%d leases", i), minTTL: 2}
			r.keys[key+metaSuffix] = keyOwner{who: i, label: fmt.Sprintf("id%d leases:meta", i), minTTL: 2}
			r.led.account(i, 0, Concurrency, sc.initial[i][0])
		}
	case kindMulti:
		quotas := make([]Quota, len(sc.algs))
		r.names = make([]string, len(sc.algs))
		for q, alg := range sc.algs {
			r.names[q] = "q" + strconv.Itoa(q)
			quotas[q] = Quota{Name: r.names[q], Limit: sc.initial[0][q], Algorithm: alg}
		}
		if r.bases.multi, err = NewMulti(r.e.client, quotas, opts...); err != nil {
			return err
		}
		r.multi = make([]*MultiLimiter, n)
		for i := range n {
			if r.multi[i], err = r.bases.multi.WithLimits(sc.initial[i]...); err != nil {
				return err
			}
			keys, _ := r.multi[i].Keys(r.ids[i])
			for q, k := range keys {
				r.keys[k] = keyOwner{who: i, quota: q, state: true, label: fmt.Sprintf("id%d %s", i, r.names[q]), minTTL: minTTLOf(sc.algs[q])}
				r.qm[i] = append(r.qm[i], &quotaModel{alg: sc.algs[q]})
				r.led.account(i, q, sc.algs[q], sc.initial[i][q])
			}
		}
	default:
		alg := sc.kind.algorithm()
		if r.bases.lim, err = New(r.e.client, sc.initial[0][0], append(opts, WithAlgorithm(alg))...); err != nil {
			return err
		}
		r.lim = make([]*Limiter, n)
		for i := range n {
			if r.lim[i], err = r.bases.lim.WithLimit(sc.initial[i][0]); err != nil {
				return err
			}
			key, _ := r.lim[i].Key(r.ids[i])
			r.keys[key] = keyOwner{who: i, state: true, label: fmt.Sprintf("id%d", i), minTTL: minTTLOf(alg)}
			if alg.twoKeys() {
				r.keys[key+metaSuffix] = keyOwner{who: i, label: fmt.Sprintf("id%d:meta", i), minTTL: minTTLOf(alg)}
			}
			r.qm[i] = []*quotaModel{{alg: alg}}
			r.led.account(i, 0, alg, sc.initial[i][0])
		}
	}
	return nil
}

func (r *diffRunner) fail(class, what, format string, args ...any) *diffFailure {
	return &diffFailure{class: class, what: what, msg: fmt.Sprintf(format, args...)}
}

// call brackets one library call: it arms the proxy for a lost reply, and
// returns the script runs Redis made meanwhile (the dropped one first).
func (r *diffRunner) call(lost bool, f func()) []wireEvent {
	if lost {
		r.e.proxy.armed.Store(1)
	}
	f()
	r.e.proxy.armed.Store(0)
	return r.e.proxy.take()
}

// absorb checks that every key has a TTL after a script ran, and turns each
// TTL the script set into a virtual expiry on the test clock.
func (r *diffRunner) absorb(i int, events []wireEvent) *diffFailure {
	for _, ev := range events {
		// A key that vanished between two steps: real time expired it,
		// or something else wrote to Redis. Either way the harness no
		// longer knows Redis's state.
		for _, k := range sortedKeys(r.present) {
			if !ev.before[k] {
				return r.fail("harness", "vanished", "key %s vanished before step #%d (the harness did not delete it)", r.label(k), i)
			}
		}
		r.present = map[string]bool{}
		for k := range ev.ttls {
			r.present[k] = true
		}
		for _, k := range sortedKeys(ev.ttls) {
			switch ttl := ev.ttls[k]; {
			case ttl == ttlNone:
				return r.fail("no-ttl", r.label(k), "key %s has no TTL after step #%d", r.label(k), i)
			case ttl == ttlUntouched:
				// The call left the TTL alone: the earlier expiry stands.
			case ttl < r.keys[k].minTTL:
				return r.fail("short-ttl", r.label(k), "key %s given a TTL of %d ms at step #%d, below the least of %d ms", r.label(k), ttl, i, r.keys[k].minTTL)
			default:
				// Redis keeps a key given PEXPIRE n for more than n ms
				// (its clock counts whole ms): it may be gone from n ms
				// and 1 µs on. The state must not matter any more then.
				r.vexp[k] = vexpiry{at: r.now + ttl*1000 + 1, ttl: ttl, step: i}
			}
		}
		for k := range r.vexp {
			if _, ok := ev.ttls[k]; !ok {
				delete(r.vexp, k) // the script deleted it
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (r *diffRunner) label(key string) string {
	if o, ok := r.keys[key]; ok {
		return o.label
	}
	return key
}

// expire deletes every key whose virtual expiry has passed, after checking
// that its state was no longer needed: under the limit of the last call
// that could set its TTL, it changes no answer from its expiry on.
func (r *diffRunner) expire(i int) *diffFailure {
	for _, k := range sortedKeys(r.vexp) {
		v := r.vexp[k]
		if v.at > r.now {
			continue
		}
		if err := r.e.admin.Del(r.ctx, k).Err(); err != nil {
			return r.fail("error", "expire", "DEL: %v", err)
		}
		delete(r.vexp, k)
		delete(r.present, k)
		o, ok := r.keys[k]
		if !ok || !o.state {
			continue // a summary the scripts rebuild, or a key the model does not hold
		}
		var needed bool
		var lim Limit
		if r.sc.kind == kindLeases {
			needed = !r.lm[o.who].irrelevantAt(v.at)
		} else {
			lim = r.last[o.who][o.quota]
			needed = lim != (Limit{}) && !r.qm[o.who][o.quota].irrelevantAt(lim, v.at)
		}
		if needed {
			return r.fail("expired-early", r.sc.kind.String(),
				"key %s expired at %s (a TTL of %d ms set at step #%d) while its state still mattered under %v",
				o.label, r.clockString(v.at), v.ttl, v.step, lim)
		}
		if r.sc.kind == kindLeases {
			r.lm[o.who] = leaseModel{}
		} else {
			r.qm[o.who][o.quota].clear()
		}
	}
	return nil
}

// dump describes Redis's state of identity who (every key, its value and
// PTTL) and the model's, for the report of a wrong result.
func (r *diffRunner) dump(who int) string {
	var b strings.Builder
	for _, k := range sortedKeys(r.keys) {
		o := r.keys[k]
		if o.who != who {
			continue
		}
		var v any
		switch typ, _ := r.e.admin.Type(r.ctx, k).Result(); typ {
		case "string":
			v = r.e.admin.Get(r.ctx, k).Val()
		case "hash":
			v = r.e.admin.HGetAll(r.ctx, k).Val()
		case "zset":
			v = r.e.admin.ZRangeWithScores(r.ctx, k, 0, -1).Val()
		default:
			v = typ
		}
		fmt.Fprintf(&b, "\n    redis %s: %v", o.label, v)
		if vx, ok := r.vexp[k]; ok {
			fmt.Fprintf(&b, " (expires at %s, TTL %d ms set at step #%d)", r.clockString(vx.at), vx.ttl, vx.step)
		}
	}
	if r.sc.kind == kindLeases {
		fmt.Fprintf(&b, "\n    model: %+v", r.lm[who].leases)
	} else {
		for q, m := range r.qm[who] {
			fmt.Fprintf(&b, "\n    model %d: %v", q, m)
		}
	}
	return b.String()
}

func (r *diffRunner) clockString(t int64) string {
	return "t=" + time.Duration((t-diffBase.UnixMicro()-r.sc.offset)*1000).String()
}

// step runs one step and checks it.
func (r *diffRunner) step(i int, s diffStep) *diffFailure {
	switch s.do {
	case doAdvance:
		r.now += s.d
		r.e.clock.Store(r.now)
		r.trace[i] = r.clockString(r.now)
		return r.expire(i)
	case doLimit:
		return r.setLimit(i, s)
	case doReset:
		return r.reset(i, s)
	}
	if s.do == doAllow && s.canceled {
		return r.canceledStep(i, s)
	}
	switch r.sc.kind {
	case kindLeases:
		return r.leaseStep(i, s)
	case kindMulti:
		return r.multiStep(i, s)
	}
	return r.limiterStep(i, s)
}

// canceledStep runs a decision whose caller's context ended before it: it
// is denied with ReasonCanceled whatever the fail strategy or shadow mode,
// with a *BackendError of type canceled, and calls nothing.
func (r *diffRunner) canceledStep(i int, s diffStep) *diffFailure {
	ctx, cancel := context.WithCancel(r.ctx)
	cancel()
	w, lims := s.who, r.cur[s.who]
	var got Result
	var quotas []Result
	var lease *Lease
	var err error
	costs := make([]int64, len(lims))
	for q, l := range lims {
		costs[q] = clampCost(s.costs[q], 0, capacity(l))
	}
	want := Result{Reason: diffReasonCanceled, Limit: lims[0]}
	events := r.call(false, func() {
		switch r.sc.kind {
		case kindLeases:
			want.Limit = Limit{Rate: lims[0].Rate, Per: durUS(r.sc.leaseTTL)}
			lease, got, err = r.conc[w].Acquire(ctx, r.ids[w], clampCost(s.costs[0], 1, lims[0].Rate))
		case kindMulti:
			var m MultiResult
			m, err = r.multi[w].AllowCosts(ctx, r.ids[w], costs...)
			got, quotas = m.Result, m.Quotas
		default:
			got, err = r.lim[w].AllowN(ctx, r.ids[w], costs[0])
		}
	})
	r.trace[i] = resultString(got)
	r.out[s.uid] = &diffOutcome{who: w, t: r.now, costs: costs, refunded: make([]int64, len(costs)), res: got,
		multi: MultiResult{Result: got, Quotas: quotas}, multiOK: r.sc.kind == kindMulti, leaseMax: lims[0].Rate}
	if len(events) > 0 {
		return r.fail("calls", "canceled", "a decision whose context had ended called Redis")
	}
	var be *BackendError
	if !errors.As(err, &be) || be.Type != ErrorCanceled {
		return r.fail("result", "canceled/error", "error %v, want a *BackendError of type canceled", err)
	}
	d := resultDiff("", got, want, 0)
	if lease != nil {
		d = append(d, "a lease was granted")
	}
	for q, qr := range quotas {
		d = append(d, resultDiff(fmt.Sprintf("%s.", r.names[q]), qr, Result{Reason: diffReasonCanceled, Limit: lims[q]}, 0)...)
	}
	if r.sc.kind == kindMulti && len(quotas) != len(lims) {
		d = append(d, fmt.Sprintf("%d quota results, want %d", len(quotas), len(lims)))
	}
	if d != nil {
		return r.fail("result", "canceled/"+fieldsOf(d), "%s", joinLines(d))
	}
	return nil
}

func (r *diffRunner) setLimit(i int, s diffStep) *diffFailure {
	w := s.who
	var err error
	switch r.sc.kind {
	case kindLeases:
		r.conc[w], err = r.bases.conc.WithMax(s.limits[0].Rate)
	case kindMulti:
		r.multi[w], err = r.bases.multi.WithLimits(s.limits...)
	default:
		r.lim[w], err = r.bases.lim.WithLimit(s.limits[0])
	}
	if err != nil {
		return r.fail("error", "WithLimit", "%v", err)
	}
	for q, l := range s.limits {
		if l != r.cur[w][q] {
			r.led.boundary(w, q, l)
		}
	}
	r.cur[w] = slices.Clone(s.limits)
	return nil
}

func (r *diffRunner) reset(i int, s diffStep) *diffFailure {
	w := s.who
	var err error
	r.call(false, func() {
		switch r.sc.kind {
		case kindLeases:
			err = r.conc[w].Reset(r.ctx, r.ids[w])
		case kindMulti:
			err = r.multi[w].Reset(r.ctx, r.ids[w])
		default:
			err = r.lim[w].Reset(r.ctx, r.ids[w])
		}
	})
	if err != nil {
		return r.fail("error", "Reset", "%v", err)
	}
	for k, o := range r.keys {
		if o.who == w {
			delete(r.vexp, k)
			delete(r.present, k)
		}
	}
	if r.sc.kind == kindLeases {
		r.lm[w] = leaseModel{}
		r.led.reset(w)
	} else {
		for q, m := range r.qm[w] {
			m.clear()
			r.led.forget(w, q, r.now)
		}
	}
	return nil
}

// capacity is the largest cost a limit accepts.
func capacity(l Limit) int64 { return l.Capacity() }

func clampCost(c, lo, hi int64) int64 { return max(lo, min(c, hi)) }

func durUS(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// modelResult is the Result a single-algorithm reply becomes.
func modelResult(rep modelReply, lim Limit, decision, shadow bool) Result {
	res := Result{Allowed: rep.allowed, Reason: ReasonQuota, Limit: lim, Remaining: rep.remaining,
		RetryAfter: durUS(rep.retryAfter), ResetAfter: durUS(rep.resetAfter)}
	if decision && shadow && !res.Allowed {
		res.Allowed, res.Reason = true, ReasonShadow
	}
	return res
}

// resultDiff lists the fields in which got differs from want; wantNow is
// the decision's time.
func resultDiff(prefix string, got, want Result, wantNow int64) []string {
	var d []string
	add := func(field string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s%s: redis %v, model %v", prefix, field, g, w))
		}
	}
	add("Allowed", got.Allowed, want.Allowed)
	add("Reason", got.Reason, want.Reason)
	add("Limit", got.Limit, want.Limit)
	add("Remaining", got.Remaining, want.Remaining)
	add("RetryAfter", got.RetryAfter, want.RetryAfter)
	add("ResetAfter", got.ResetAfter, want.ResetAfter)
	add("Quota", got.Quota, want.Quota)
	if t, ok := diffResultTime(got); ok {
		add("Time", t, wantNow)
	}
	return d
}

func resultString(r Result) string {
	s := fmt.Sprintf("allowed=%v", r.Allowed)
	if r.Reason != ReasonQuota {
		s += " reason=" + r.Reason.String()
	}
	return s + fmt.Sprintf(" remaining=%d retry=%v reset=%v", r.Remaining, r.RetryAfter, r.ResetAfter)
}

func replyString(rep modelReply) string {
	return fmt.Sprintf("allowed=%v remaining=%d retry=%v reset=%v", rep.allowed, rep.remaining,
		durUS(rep.retryAfter), durUS(rep.resetAfter))
}

// hidden checks the reply of a run whose reply was dropped (Redis ran it,
// the client never saw it) against the model's.
func (r *diffRunner) hidden(what string, ev wireEvent, want []int64) *diffFailure {
	got, err := ev.reply.ints()
	if err != nil {
		return r.fail("lost-reply", what, "dropped reply: %v", err)
	}
	if !slices.Equal(got[:min(len(got), len(want))], want) {
		return r.fail("lost-reply", what, "the run whose reply was lost answered %v, the model %v", got, want)
	}
	return nil
}

func replyInts(rep modelReply) []int64 {
	a := int64(0)
	if rep.allowed {
		a = 1
	}
	return []int64{a, rep.remaining, rep.retryAfter, rep.resetAfter, rep.now}
}

// runsOf checks that an operation made one script run, plus one per
// dropped reply, and returns how many.
func (r *diffRunner) runsOf(what string, events []wireEvent) (int, *diffFailure) {
	dropped := 0
	for _, ev := range events {
		if ev.dropped {
			dropped++
		}
	}
	if len(events) != 1+dropped {
		return 0, r.fail("calls", what, "%d script runs for one call (%d replies dropped)", len(events), dropped)
	}
	return len(events), nil
}

func (r *diffRunner) limiterStep(i int, s diffStep) *diffFailure {
	w, lim := s.who, r.cur[s.who][0]
	q := r.qm[w][0]
	switch s.do {
	case doAllow:
		cost := clampCost(s.costs[0], 0, capacity(lim))
		var res Result
		var err error
		events := r.call(s.lost, func() { res, err = r.lim[w].AllowN(r.ctx, r.ids[w], cost) })
		if err != nil {
			return r.fail("error", "AllowN", "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		runs, f := r.runsOf("AllowN", events)
		if f != nil {
			return f
		}
		r.last[w][0] = lim
		var rep modelReply
		for k := range runs {
			rep = q.call(lim, cost, mSpend, r.now, 0)
			if events[k].dropped {
				if f := r.hidden("AllowN", events[k], replyInts(rep)); f != nil {
					return f
				}
			}
		}
		r.trace[i] = resultString(res)
		r.out[s.uid] = &diffOutcome{who: w, t: r.now, costs: []int64{cost}, refunded: []int64{0}, res: res}
		if d := resultDiff("", res, modelResult(rep, lim, true, r.sc.shadow), rep.now); d != nil {
			return r.fail("result", "AllowN/"+fieldsOf(d), "%s", joinLines(d))
		}
		for _, ev := range events {
			if a, _ := ev.reply.ints(); len(a) > 0 && a[0] == 1 && cost > 0 {
				if err := r.led.admit(w, 0, s.uid, r.now, cost); err != nil {
					return r.fail("ledger", r.sc.kind.String(), "%v", err)
				}
			}
		}
	case doPeek:
		var res Result
		var err error
		events := r.call(s.lost, func() { res, err = r.lim[w].Peek(r.ctx, r.ids[w]) })
		if err != nil {
			return r.fail("error", "Peek", "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		runs, f := r.runsOf("Peek", events)
		if f != nil {
			return f
		}
		var rep modelReply
		for range runs {
			rep = q.call(lim, 1, mPeek, r.now, 0)
		}
		r.trace[i] = resultString(res)
		if d := resultDiff("", res, modelResult(rep, lim, false, false), rep.now); d != nil {
			return r.fail("result", "Peek/"+fieldsOf(d), "%s", joinLines(d))
		}
	case doRefund:
		o := r.out[s.ref]
		if o == nil || o.who != w || o.multiOK || o.lease != nil {
			r.trace[i] = "skipped: its reservation is not in this sequence"
			return nil
		}
		amount := clampCost(s.costs[0], 0, min(o.costs[0]-o.refunded[0], capacity(lim)))
		var res Result
		var err error
		events := r.call(s.lost, func() { res, err = diffRefund(r.ctx, r.lim[w], r.ids[w], o.res, amount) })
		if err != nil {
			return r.fail("error", "Refund", "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		spent := o.res.Allowed && o.res.Reason == ReasonQuota
		if !spent || len(events) == 0 {
			r.trace[i] = "no call"
			if len(events) > 0 {
				return r.fail("calls", "Refund", "a refund of a spend that did not happen (%s) called Redis", resultString(o.res))
			}
			if !spent && res != (Result{}) {
				return r.fail("result", "Refund", "a refund of a spend that did not happen returned %+v, want a zero Result", res)
			}
			if amount > 0 && spent {
				return r.fail("calls", "Refund", "a refund of %d made no call", amount)
			}
			return nil
		}
		if _, f := r.runsOf("Refund", events); f != nil {
			return f
		}
		r.last[w][0] = lim
		// Exactly once, even when the reply was lost and the call resent.
		rep := q.call(lim, amount, mRefund, r.now, o.t)
		if events[0].dropped {
			if f := r.hidden("Refund", events[0], replyInts(rep)); f != nil {
				return f
			}
		}
		o.refunded[0] += amount
		r.trace[i] = resultString(res)
		if d := resultDiff("", res, modelResult(rep, lim, false, false), rep.now); d != nil {
			return r.fail("result", "Refund/"+fieldsOf(d), "%s", joinLines(d))
		}
		r.led.refund(w, 0, s.ref, o.t, r.now, amount)
	}
	return nil
}

func (r *diffRunner) multiStep(i int, s diffStep) *diffFailure {
	w, lims := s.who, r.cur[s.who]
	n := len(lims)
	caps := make([]int64, n)
	for q, l := range lims {
		caps[q] = capacity(l)
	}
	expect := func(rep multiReply, costs []int64, decision bool) MultiResult {
		qs := make([]Result, n)
		for q := range n {
			qs[q] = modelResult(rep.quotas[q], lims[q], false, false)
			qs[q].Quota = r.names[q]
		}
		top := qs[multiBinding(qs, caps, costs, rep.allowed)]
		top.Allowed = rep.allowed
		if rep.allowed {
			top.RetryAfter = 0
		}
		if decision && r.sc.shadow && !top.Allowed {
			top.Allowed, top.Reason = true, ReasonShadow
		}
		return MultiResult{Result: top, Quotas: qs}
	}
	check := func(what string, got MultiResult, rep multiReply, costs []int64, decision bool) *diffFailure {
		want := expect(rep, costs, decision)
		d := resultDiff("", got.Result, want.Result, rep.now)
		if len(got.Quotas) != n {
			d = append(d, fmt.Sprintf("%d quota results, want %d", len(got.Quotas), n))
		} else {
			for q := range n {
				d = append(d, resultDiff(fmt.Sprintf("%s.", r.names[q]), got.Quotas[q], want.Quotas[q], rep.now)...)
			}
		}
		if d != nil {
			return r.fail("result", what+"/"+fieldsOf(d), "%s", joinLines(d))
		}
		return nil
	}
	multiInts := func(rep multiReply) []int64 {
		out := []int64{0, rep.now}
		if rep.allowed {
			out[0] = 1
		}
		for _, q := range rep.quotas {
			out = append(out, replyInts(q)[:4]...)
		}
		return out
	}
	switch s.do {
	case doAllow, doPeek:
		costs := make([]int64, n)
		mode, what := mSpend, "AllowCosts"
		var got MultiResult
		var err error
		var events []wireEvent
		if s.do == doPeek {
			mode, what = mPeek, "Peek"
			for q := range costs {
				costs[q] = 1
			}
			events = r.call(s.lost, func() { got, err = r.multi[w].Peek(r.ctx, r.ids[w]) })
		} else {
			for q := range costs {
				costs[q] = clampCost(s.costs[q], 0, caps[q])
			}
			events = r.call(s.lost, func() { got, err = r.multi[w].AllowCosts(r.ctx, r.ids[w], costs...) })
		}
		if err != nil {
			return r.fail("error", what, "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		runs, f := r.runsOf(what, events)
		if f != nil {
			return f
		}
		if mode != mPeek {
			copy(r.last[w], lims)
		}
		var rep multiReply
		for k := range runs {
			rep = multiCall(r.qm[w], lims, costs, mode, r.now, 0)
			if events[k].dropped {
				if f := r.hidden(what, events[k], multiInts(rep)); f != nil {
					return f
				}
			}
		}
		r.trace[i] = resultString(got.Result) + " quota=" + got.Quota
		if mode == mSpend {
			r.out[s.uid] = &diffOutcome{who: w, t: r.now, costs: costs, refunded: make([]int64, n), multi: got, multiOK: true}
		}
		if f := check(what, got, rep, costs, mode == mSpend); f != nil {
			return f
		}
		if mode != mSpend {
			return nil
		}
		for _, ev := range events {
			if a, _ := ev.reply.ints(); len(a) > 0 && a[0] == 1 {
				for q, c := range costs {
					if c > 0 {
						if err := r.led.admit(w, q, s.uid, r.now, c); err != nil {
							return r.fail("ledger", r.names[q]+" "+r.sc.algs[q].String(), "%v", err)
						}
					}
				}
			}
		}
	case doRefund:
		o := r.out[s.ref]
		if o == nil || o.who != w || !o.multiOK {
			r.trace[i] = "skipped: its reservation is not in this sequence"
			return nil
		}
		amounts := make([]int64, n)
		for q := range n {
			amounts[q] = clampCost(s.costs[q], 0, min(o.costs[q]-o.refunded[q], caps[q]))
		}
		var got MultiResult
		var err error
		events := r.call(s.lost, func() { got, err = diffMultiRefund(r.ctx, r.multi[w], r.ids[w], o.multi, amounts) })
		if err != nil {
			return r.fail("error", "Refund", "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		spent := o.multi.Allowed && o.multi.Reason == ReasonQuota
		if !spent || len(events) == 0 {
			r.trace[i] = "no call"
			if len(events) > 0 {
				return r.fail("calls", "Refund", "a refund of a spend that did not happen (%s) called Redis", resultString(o.multi.Result))
			}
			if !spent && (got.Result != (Result{}) || got.Quotas != nil) {
				return r.fail("result", "Refund", "a refund of a spend that did not happen returned %+v, want a zero MultiResult", got)
			}
			return nil
		}
		if _, f := r.runsOf("Refund", events); f != nil {
			return f
		}
		copy(r.last[w], lims)
		rep := multiCall(r.qm[w], lims, amounts, mRefund, r.now, o.t)
		if events[0].dropped {
			if f := r.hidden("Refund", events[0], multiInts(rep)); f != nil {
				return f
			}
		}
		for q := range n {
			o.refunded[q] += amounts[q]
		}
		r.trace[i] = resultString(got.Result)
		if f := check("Refund", got, rep, amounts, false); f != nil {
			return f
		}
		for q, a := range amounts {
			if a > 0 {
				r.led.refund(w, q, s.ref, o.t, r.now, a)
			}
		}
	}
	return nil
}

func (r *diffRunner) leaseStep(i int, s diffStep) *diffFailure {
	ttl := r.sc.leaseTTL
	switch s.do {
	case doAllow, doPeek:
		w := s.who
		maxN := r.cur[w][0].Rate
		lim := Limit{Rate: maxN, Per: durUS(ttl)}
		weight, op, what := int64(1), lAcquire, "Acquire"
		if len(s.costs) > 0 {
			weight = clampCost(s.costs[0], 1, maxN)
		}
		var lease *Lease
		var res Result
		var err error
		var events []wireEvent
		if s.do == doPeek {
			weight, op, what = 1, lPeek, "Peek"
			events = r.call(s.lost, func() { res, err = r.conc[w].Peek(r.ctx, r.ids[w]) })
		} else {
			events = r.call(s.lost, func() { lease, res, err = r.conc[w].Acquire(r.ctx, r.ids[w], weight) })
		}
		if err != nil {
			return r.fail("error", what, "%v", err)
		}
		if f := r.absorb(i, events); f != nil {
			return f
		}
		runs, f := r.runsOf(what, events)
		if f != nil {
			return f
		}
		id := "0"
		if op == lAcquire {
			id = "denied" + strconv.Itoa(s.uid)
			if lease != nil && lease.Tracked() {
				id = lease.ID()
			}
		}
		var rep modelReply
		for k := range runs {
			rep = r.lm[w].call(maxN, ttl, id, weight, op, r.now)
			if events[k].dropped {
				if f := r.hidden(what, events[k], replyInts(rep)); f != nil {
					return f
				}
			}
		}
		r.trace[i] = resultString(res)
		want := modelResult(rep, lim, op == lAcquire, r.sc.shadow)
		d := resultDiff("", res, want, rep.now)
		if op == lAcquire {
			r.out[s.uid] = &diffOutcome{who: w, t: r.now, costs: []int64{weight}, res: res, lease: lease, leaseMax: maxN}
			if (lease != nil) != want.Allowed || (lease != nil && lease.Tracked() != rep.allowed) {
				d = append(d, fmt.Sprintf("lease %v (tracked %v), model granted=%v", lease != nil, lease != nil && lease.Tracked(), rep.allowed))
			}
		}
		if d != nil {
			return r.fail("result", what+"/"+fieldsOf(d), "%s", joinLines(d))
		}
		if op == lAcquire {
			for _, ev := range events {
				if a, _ := ev.reply.ints(); len(a) > 0 && a[0] == 1 {
					if err := r.led.acquire(w, id, weight, r.now, r.now+ttl, maxN); err != nil {
						return r.fail("ledger", "leases", "%v", err)
					}
				}
			}
		}
	case doRelease, doExtend:
		o := r.out[s.ref]
		if o == nil {
			r.trace[i] = "skipped: its lease is not in this sequence"
			return nil
		}
		what, op := "Release", lRelease
		if s.do == doExtend {
			what, op = "Extend", lExtend
		}
		var err error
		events := r.call(s.lost, func() {
			if op == lRelease {
				err = o.lease.Release(r.ctx)
			} else {
				err = o.lease.Extend(r.ctx)
			}
		})
		if f := r.absorb(i, events); f != nil {
			return f
		}
		if o.lease == nil || !o.lease.Tracked() {
			r.trace[i] = "no call"
			if err != nil || len(events) > 0 {
				return r.fail("calls", what, "%s of a lease Redis does not hold: err %v, %d script runs", what, err, len(events))
			}
			return nil
		}
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			return r.fail("error", what, "%v", err)
		}
		runs, f := r.runsOf(what, events)
		if f != nil {
			return f
		}
		var rep modelReply
		for k := range runs {
			rep = r.lm[o.who].call(o.leaseMax, ttl, o.lease.ID(), o.lease.Weight(), op, r.now)
			if events[k].dropped {
				// Only the decision: the remaining capacity of a release
				// is relative to the max of the view that acquired it.
				if f := r.hidden(what, events[k], replyInts(rep)[:1]); f != nil {
					return f
				}
			}
		}
		lost := errors.Is(err, ErrLeaseLost)
		r.trace[i] = fmt.Sprintf("err=%v", err)
		if op == lExtend && lost == rep.allowed {
			return r.fail("result", what, "Extend: redis err=%v, model still held=%v", err, rep.allowed)
		}
		a, _ := events[len(events)-1].reply.ints()
		switch {
		case op == lExtend && len(a) > 0 && a[0] == 1:
			r.led.extend(o.who, o.lease.ID(), r.now+ttl)
		default:
			r.led.release(o.who, o.lease.ID())
		}
	}
	return nil
}

// fieldsOf names the fields a list of differences is about: the symptom
// shrinking keeps.
func fieldsOf(d []string) string {
	fields := make([]string, len(d))
	for i, line := range d {
		fields[i], _, _ = strings.Cut(line, ":")
	}
	return strings.Join(fields, ",")
}

func joinLines(d []string) string { return strings.Join(d, "; ") }

// ledger counts what Redis admitted and what was refunded, per identity and
// quota, independently of the model, and checks after every admission that
// no window admitted more than the limit allows. A regime is a stretch of
// steps under one limit, without a Reset: bounds hold within one.
type diffLedger struct {
	accts map[[2]int]*ledgerAccount
}

type ledgerAccount struct {
	alg   Algorithm
	limit Limit
	adm   []ledgerAdm // the regime's admissions
	ref   []ledgerRef // refunds made during the regime of spends since the last Reset (or in its µs)
	held  map[string]ledgerLease
	// epoch holds the spends since the last Reset, with their times: a
	// refund of an older one gives back nothing it could count (the state
	// written after the Reset is born later)...
	epoch map[int]int64
	// ...unless the Reset ran in the µs of that spend: a state born in
	// that µs cannot tell the spend from its own, and the refund may give
	// back units of the spends since the Reset (the birth's resolution).
	resetUS map[int]int64
}

type ledgerAdm struct {
	uid       int
	t, amount int64
}

type ledgerRef struct {
	resUID          int
	resT, t, amount int64
	// forgotten: the spend was made before a Reset in its µs (resetUS).
	forgotten bool
}

type ledgerLease struct{ weight, expiry int64 }

func (l *diffLedger) account(who, q int, alg Algorithm, lim Limit) {
	l.accts[[2]int{who, q}] = &ledgerAccount{alg: alg, limit: lim, held: map[string]ledgerLease{}, epoch: map[int]int64{}, resetUS: map[int]int64{}}
}

func (l *diffLedger) boundary(who, q int, lim Limit) {
	a := l.accts[[2]int{who, q}]
	a.limit, a.adm, a.ref = lim, nil, nil
	if a.alg == Concurrency {
		a.limit = lim // leases: a new max bounds new acquires; the leases stay held
	}
}

func (l *diffLedger) refund(who, q, resUID int, resT, t, amount int64) {
	a := l.accts[[2]int{who, q}]
	_, inEpoch := a.epoch[resUID]
	if _, forgotten := a.resetUS[resUID]; inEpoch || forgotten {
		a.ref = append(a.ref, ledgerRef{resUID: resUID, resT: resT, t: t, amount: amount, forgotten: !inEpoch})
	}
}

// forget starts a new epoch: a Reset at t forgot every spend. Those made
// at t too stay refundable in the new epoch.
func (l *diffLedger) forget(who, q int, t int64) {
	a := l.accts[[2]int{who, q}]
	resetUS := map[int]int64{}
	for _, spends := range []map[int]int64{a.epoch, a.resetUS} {
		for uid, at := range spends {
			if at == t {
				resetUS[uid] = at
			}
		}
	}
	a.adm, a.ref, a.epoch, a.resetUS = nil, nil, map[int]int64{}, resetUS
}

// admit records an admission of amount at t and checks the bound of the
// account's algorithm.
func (l *diffLedger) admit(who, q, uid int, t, amount int64) error {
	a := l.accts[[2]int{who, q}]
	a.adm = append(a.adm, ledgerAdm{uid: uid, t: t, amount: amount})
	a.epoch[uid] = t
	per := perUSOf(a.limit)
	switch a.alg {
	case TokenBucket:
		// Over any [s, t] in the regime: admitted - refunded <=
		// burst + Rate*(t-s)/Per, the bucket's capacity plus its refill.
		// Admissions and refunds are in time order: s runs down over the
		// admissions' times with running sums.
		var net int64
		ri := len(a.ref)
		for j := len(a.adm) - 1; j >= 0; j-- {
			s := a.adm[j].t
			net += a.adm[j].amount
			for ri > 0 && a.ref[ri-1].t >= s {
				ri--
				net -= a.ref[ri].amount
			}
			if (net-a.limit.Capacity())*per > a.limit.Rate*(t-s) {
				return fmt.Errorf("token bucket %v admitted %d net units in [%d µs, %d µs], more than burst + rate × span", a.limit, net, s, t)
			}
		}
	case FixedWindow, SlidingWindow:
		// Per aligned window: admitted - refunded (of spends made in it,
		// while it was current) <= quota.
		k := t / per
		var net int64
		for _, x := range a.adm {
			if x.t/per == k {
				net += x.amount
			}
		}
		for _, x := range a.ref {
			if x.t/per == k && x.resT/per == k {
				net -= x.amount
			}
		}
		if net > a.limit.Rate {
			return fmt.Errorf("%v window %v [%d µs, +%v) admitted %d net units", a.alg, a.limit, k*per, a.limit.Per, net)
		}
	case SlidingLog:
		// In every (t-Per, t]: spends - their refunds <= quota. A refund
		// of a forgotten spend takes from the spends logged in its µs.
		var net int64
		in := map[int]bool{}
		for _, x := range a.adm {
			if x.t > t-per {
				net += x.amount
				in[x.uid] = true
			}
		}
		for _, x := range a.ref {
			if in[x.resUID] || (x.forgotten && x.resT > t-per) {
				net -= x.amount
			}
		}
		if net > a.limit.Rate {
			return fmt.Errorf("sliding log %v admitted %d net units in (%d µs, %d µs]", a.limit, net, t-per, t)
		}
	}
	return nil
}

// acquire records a lease granted at t and checks the weights held at once
// against max.
func (l *diffLedger) acquire(who int, id string, weight, t, expiry, maxN int64) error {
	a := l.accts[[2]int{who, 0}]
	if _, ok := a.held[id]; ok {
		return nil // the same lease, granted again (a resent acquire)
	}
	held := weight
	for _, x := range a.held {
		if x.expiry > t {
			held += x.weight
		}
	}
	a.held[id] = ledgerLease{weight: weight, expiry: expiry}
	if held > maxN {
		return fmt.Errorf("leases hold %d units at once, max %d", held, maxN)
	}
	return nil
}

func (l *diffLedger) extend(who int, id string, expiry int64) {
	a := l.accts[[2]int{who, 0}]
	if x, ok := a.held[id]; ok {
		x.expiry = expiry
		a.held[id] = x
	}
}

func (l *diffLedger) release(who int, id string) { delete(l.accts[[2]int{who, 0}].held, id) }

func (l *diffLedger) reset(who int) { l.accts[[2]int{who, 0}].held = map[string]ledgerLease{} }
