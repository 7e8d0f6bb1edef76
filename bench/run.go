package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// sample is one measurement of one cell (case, keys, concurrency) in one
// round.
type sample struct {
	Round     int     `json:"round"`
	Decisions uint64  `json:"decisions"`
	Errors    uint64  `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"decisions_per_sec"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	P999      float64 `json:"p999_us"`
	Allocs    float64 `json:"allocs_per_decision"`
	RedisCPU  float64 `json:"redis_cpu_us_per_decision"`
	// Cmds are the commands Redis ran, from INFO commandstats.
	Cmds map[string]cmdUse `json:"commands"`
	// Denied and Cached count the decisions that denied (of Decisions):
	// in all, and those answered by the deny cache without Redis.
	Denied uint64 `json:"denied,omitempty"`
	Cached uint64 `json:"cached,omitempty"`
	// Abuse is the over-admission check of an abuse case.
	Abuse *abuseCheck `json:"abuse,omitempty"`
	// The sharded-buckets section's cells (on a Redis Cluster) also have:
	// Admission, the check of an admission case (Over: admitted above
	// the bound of the whole limit); RedisCores and ClientCores, the CPU
	// all masters and this process used, in cores (CPU seconds per second
	// of the cell), and TopMasterCores the most any one master used (a
	// master runs commands on one thread: near 1, it is the bottleneck);
	// MastersUsed, the masters that ran script calls, and BusiestShare,
	// the share of script calls the busiest one ran.
	Admission      *abuseCheck `json:"admission,omitempty"`
	TopMasterCores float64     `json:"top_master_cores,omitempty"`
	RedisCores     float64     `json:"redis_cores,omitempty"`
	ClientCores    float64     `json:"client_cores,omitempty"`
	MastersUsed    int         `json:"masters_used,omitempty"`
	BusiestShare   float64     `json:"busiest_master_share,omitempty"`
}

// abuseCheck compares what each abuser was admitted, over warm-up and
// measurement, with burst + rate × elapsed on Redis's clock (TIME before
// the first call and after the last).
type abuseCheck struct {
	RedisSeconds float64 `json:"redis_seconds"`
	Admitted     int64   `json:"admitted"`       // all abusers together
	Bound        int64   `json:"bound"`          // the sum of their bounds
	Over         int64   `json:"over_admission"` // the sum of what each was admitted over its bound
	GoodDenied   uint64  `json:"good_denied"`    // denials of well-behaved identities
}

// cmdUse is one command's calls per decision and Redis time per call
// (commandstats usec_per_call; a script's time includes the commands it
// calls, which are counted again on their own lines).
type cmdUse struct {
	PerDecision float64 `json:"per_decision"`
	USPerCall   float64 `json:"us_per_call"`
}

type cell struct {
	Case  string `json:"case"`
	Setup string `json:"setup"`
	Keys  int    `json:"keys"`
	Conc  int    `json:"concurrency"`
}

// The client setups every case runs in.
const (
	// perCase: a fresh client per cell with a connection per caller and
	// ContextTimeoutEnabled, so that no case waits on the pool.
	perCase = "per-case"
	// shared: one client with go-redis's default options, made once and
	// used by every case of the run, as a program that already has a
	// client would (issue 13).
	shared = "shared"
)

var setupNames = []string{perCase, shared}

func setupLabel(s string) string {
	switch s {
	case perCase:
		return "fresh client per case"
	case shared:
		return "one shared default client"
	case clusterSetup:
		return "Redis Cluster, one default ClusterClient"
	}
	return s
}

// runner measures cells against one Redis.
type runner struct {
	addr     string
	admin    *redis.Client
	shared   *redis.Client // the shared setup's client
	flush    bool          // the server is ours: FLUSHALL before each cell
	dur      time.Duration
	warm     time.Duration
	maxCalls int // per goroutine and cell, a bound on every load loop
}

// keyNames returns n identities ("user:0"...), or one hot one.
func keyNames(prefix string, n int) []string {
	if n == 1 {
		return []string{prefix + "user:hot"}
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%suser:%d", prefix, i)
	}
	return keys
}

func (r *runner) run(ctx context.Context, bc benchCase, setup string, nkeys, conc, round int) (sample, error) {
	if r.flush {
		if err := r.admin.FlushAll(ctx).Err(); err != nil {
			return sample{}, err
		}
	}
	rdb := r.shared
	if setup == perCase {
		// A client of the case's own with a connection per goroutine, so
		// that no case waits on the pool.
		rdb = redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: max(conc, 4), ContextTimeoutEnabled: true})
		defer rdb.Close()
	}
	decide, closeCase, err := bc.setup(rdb)
	if err != nil {
		return sample{}, fmt.Errorf("%s: setup: %w", bc.Name, err)
	}
	defer closeCase()
	keys := keyNames(bc.prefix, nkeys)
	var who []int
	if bc.abuse != nil {
		keys, who = bc.abuse.keys()
	}
	hists := make([]*hist, conc)
	for i := range hists {
		hists[i] = new(hist)
	}
	// The abuse check counts from the first call: Redis's clock now, and
	// the abusers' admissions over warm-up and measurement.
	var t0 time.Time
	if bc.abuse != nil {
		if t0, err = r.admin.Time(ctx).Result(); err != nil {
			return sample{}, err
		}
	}
	// Warm up: connections dialled, scripts cached, JIT-free but caches hot.
	warm := r.drive(ctx, decide, keys, who, bc.abuse != nil, conc, r.warm, hists)
	for _, h := range hists {
		*h = hist{}
	}

	if err := r.admin.ConfigResetStat(ctx).Err(); err != nil {
		return sample{}, err
	}
	cpu0, err := cpuSeconds(ctx, r.admin)
	if err != nil {
		return sample{}, err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	d := r.drive(ctx, decide, keys, who, bc.abuse != nil, conc, r.dur, hists)
	runtime.ReadMemStats(&m1)
	cpu1, err := cpuSeconds(ctx, r.admin)
	if err != nil {
		return sample{}, err
	}
	var check *abuseCheck
	if bc.abuse != nil {
		t1, err := r.admin.Time(ctx).Result()
		if err != nil {
			return sample{}, err
		}
		elapsed := t1.Sub(t0)
		check = &abuseCheck{RedisSeconds: elapsed.Seconds(), GoodDenied: warm.goodDenied + d.goodDenied}
		bound := bc.abuse.bound(elapsed)
		for a := range bc.abuse.abusers {
			n := int64(warm.admitted[a] + d.admitted[a])
			check.Admitted += n
			check.Bound += bound
			check.Over += max(n-bound, 0)
		}
	}
	stats, err := commandStats(ctx, r.admin)
	if err != nil {
		return sample{}, err
	}

	var h hist
	for _, g := range hists {
		h.merge(g)
	}
	s := sample{
		Round:     round,
		Decisions: d.ok,
		Errors:    d.errs,
		FirstErr:  d.firstErr,
		Denied:    d.denied,
		Cached:    d.cached,
		Abuse:     check,
		Seconds:   d.elapsed.Seconds(),
		P50:       us(h.quantile(0.50)),
		P99:       us(h.quantile(0.99)),
		P999:      us(h.quantile(0.999)),
		Cmds:      map[string]cmdUse{},
	}
	if d.ok > 0 {
		n := float64(d.ok)
		s.PerSec = n / d.elapsed.Seconds()
		s.Allocs = float64(m1.Mallocs-m0.Mallocs) / n
		s.RedisCPU = (cpu1 - cpu0) * 1e6 / n
		for name, st := range stats {
			if name == "info" || name == "config|resetstat" || name == "config" || st.Calls == 0 {
				continue // the benchmark's own
			}
			s.Cmds[name] = cmdUse{PerDecision: float64(st.Calls) / n, USPerCall: float64(st.Usec) / float64(st.Calls)}
		}
	}
	return s, nil
}

var errDenied = errors.New("denied (the benchmark's limit is meant never to deny)")

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

type driven struct {
	ok, errs, denied, cached uint64
	goodDenied               uint64
	admitted                 []uint64 // per abuser
	firstErr                 string
	elapsed                  time.Duration
}

// drive runs conc goroutines calling decide for dur (and at most maxCalls
// each), each recording its latencies in its own histogram. who, when set,
// names the abuser of each key (-1: none), whose admissions are counted.
// A denial is an error unless denials are expected.
func (r *runner) drive(ctx context.Context, decide decideFunc, keys []string, who []int, denials bool, conc int, dur time.Duration, hists []*hist) driven {
	nAbusers := 0
	for _, a := range who {
		nAbusers = max(nAbusers, a+1)
	}
	type counter struct {
		ok, errs, denied, cached, goodDenied uint64
		admitted                             []uint64
		first                                error
		_                                    [40]byte // no false sharing between goroutines
	}
	counts := make([]counter, conc)
	for i := range counts {
		counts[i].admitted = make([]uint64, nAbusers)
	}
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, c := hists[g], &counts[g]
			i := (g * 7919) % len(keys)
			now := time.Now()
			for n := 0; n < r.maxCalls && now.Before(deadline); n++ {
				v, err := decide(ctx, keys[i])
				end := time.Now()
				h.record(end.Sub(now))
				now = end
				if err == nil && v != allowed && !denials {
					err = errDenied
				}
				if v == allowed && who != nil && who[i] >= 0 {
					// Counted whatever the error: an admission by the
					// fail strategy admits all the same.
					c.admitted[who[i]]++
				}
				switch {
				case err != nil:
					c.errs++
					if c.first == nil {
						c.first = err
					}
				case v == allowed:
					c.ok++
				default:
					c.ok++
					c.denied++
					if v == cached {
						c.cached++
					}
					if who != nil && who[i] < 0 {
						c.goodDenied++
					}
				}
				if i++; i == len(keys) {
					i = 0
				}
			}
		}()
	}
	wg.Wait()
	d := driven{elapsed: time.Since(start), admitted: make([]uint64, nAbusers)}
	for _, c := range counts {
		d.ok += c.ok
		d.errs += c.errs
		d.denied += c.denied
		d.cached += c.cached
		d.goodDenied += c.goodDenied
		for a, n := range c.admitted {
			d.admitted[a] += n
		}
		if c.first != nil && d.firstErr == "" {
			d.firstErr = c.first.Error()
		}
	}
	return d
}

// summary is the median over rounds of each measure of one cell.
type summary struct {
	cell
	Rounds    int               `json:"rounds"`
	PerSec    float64           `json:"decisions_per_sec"`
	P50       float64           `json:"p50_us"`
	P99       float64           `json:"p99_us"`
	P999      float64           `json:"p999_us"`
	Allocs    float64           `json:"allocs_per_decision"`
	RedisCPU  float64           `json:"redis_cpu_us_per_decision"`
	Cmds      map[string]cmdUse `json:"commands"`
	Errors    uint64            `json:"errors"`
	FirstErr  string            `json:"first_error,omitempty"`
	Decisions uint64            `json:"decisions"`
	// ScriptCalls is the median of FCALL + EVALSHA + EVAL calls per
	// decision.
	ScriptCalls float64 `json:"script_calls_per_decision"`
	// CachedShare is the median share of decisions the deny cache
	// answered; DeniedShare of all denials.
	CachedShare float64 `json:"cached_share,omitempty"`
	DeniedShare float64 `json:"denied_share,omitempty"`
	// Abuse: the medians of admitted and bound, the largest over-admission
	// of any round and all good identities' denials.
	Abuse *abuseCheck `json:"abuse,omitempty"`
	// The sharded-buckets section's medians (see sample); Admission as
	// Abuse.
	Admission      *abuseCheck `json:"admission,omitempty"`
	TopMasterCores float64     `json:"top_master_cores,omitempty"`
	RedisCores     float64     `json:"redis_cores,omitempty"`
	ClientCores    float64     `json:"client_cores,omitempty"`
	MastersUsed    float64     `json:"masters_used,omitempty"`
	BusiestShare   float64     `json:"busiest_master_share,omitempty"`
}

// scriptCalls is the script calls (FCALL, EVALSHA, EVAL) per decision of
// s: the round trips' worth of work Redis was asked for. The library sends
// decisions as FCALL of its functions library where Redis has functions.
func scriptCalls(s sample) float64 {
	return s.Cmds["fcall"].PerDecision + s.Cmds["evalsha"].PerDecision + s.Cmds["eval"].PerDecision
}

func share(n, of uint64) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

func summarize(c cell, ss []sample) summary {
	med := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		sort.Float64s(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := summary{
		cell:     c,
		Rounds:   len(ss),
		PerSec:   med(func(s sample) float64 { return s.PerSec }),
		P50:      med(func(s sample) float64 { return s.P50 }),
		P99:      med(func(s sample) float64 { return s.P99 }),
		P999:     med(func(s sample) float64 { return s.P999 }),
		Allocs:   med(func(s sample) float64 { return s.Allocs }),
		RedisCPU: med(func(s sample) float64 { return s.RedisCPU }),
		Cmds:     map[string]cmdUse{},

		ScriptCalls: med(scriptCalls),
		CachedShare: med(func(s sample) float64 { return share(s.Cached, s.Decisions) }),
		DeniedShare: med(func(s sample) float64 { return share(s.Denied, s.Decisions) }),

		TopMasterCores: med(func(s sample) float64 { return s.TopMasterCores }),
		RedisCores:     med(func(s sample) float64 { return s.RedisCores }),
		ClientCores:    med(func(s sample) float64 { return s.ClientCores }),
		MastersUsed:    med(func(s sample) float64 { return float64(s.MastersUsed) }),
		BusiestShare:   med(func(s sample) float64 { return s.BusiestShare }),
	}
	checks := func(get func(sample) *abuseCheck) *abuseCheck {
		if len(ss) == 0 || get(ss[0]) == nil {
			return nil
		}
		a := &abuseCheck{
			RedisSeconds: med(func(s sample) float64 { return get(s).RedisSeconds }),
			Admitted:     int64(med(func(s sample) float64 { return float64(get(s).Admitted) })),
			Bound:        int64(med(func(s sample) float64 { return float64(get(s).Bound) })),
		}
		for _, s := range ss {
			a.Over = max(a.Over, get(s).Over)
			a.GoodDenied += get(s).GoodDenied
		}
		return a
	}
	out.Abuse = checks(func(s sample) *abuseCheck { return s.Abuse })
	out.Admission = checks(func(s sample) *abuseCheck { return s.Admission })
	names := map[string]bool{}
	for _, s := range ss {
		out.Errors += s.Errors
		out.Decisions += s.Decisions
		if out.FirstErr == "" {
			out.FirstErr = s.FirstErr
		}
		for n := range s.Cmds {
			names[n] = true
		}
	}
	for n := range names {
		out.Cmds[n] = cmdUse{
			PerDecision: med(func(s sample) float64 { return s.Cmds[n].PerDecision }),
			USPerCall:   med(func(s sample) float64 { return s.Cmds[n].USPerCall }),
		}
	}
	return out
}

// cmdsString renders commands per decision and Redis time per call:
// "EVALSHA 1.00 × 7.9 µs, TIME 1.00 × 0.3 µs".
func cmdsString(m map[string]cmdUse) string {
	type kv struct {
		k string
		v cmdUse
	}
	var all []kv
	for k, v := range m {
		if v.PerDecision >= 0.005 {
			all = append(all, kv{k, v})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].v.PerDecision != all[j].v.PerDecision {
			return all[i].v.PerDecision > all[j].v.PerDecision
		}
		return all[i].k < all[j].k
	})
	parts := make([]string, len(all))
	for i, e := range all {
		parts[i] = fmt.Sprintf("%s %.2f × %.1f µs", strings.ToUpper(e.k), e.v.PerDecision, e.v.USPerCall)
	}
	return strings.Join(parts, ", ")
}
