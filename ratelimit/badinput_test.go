package ratelimit

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// badCase is one call of a public entry point with a bad value.
type badCase struct {
	name string
	call func() error
	want error // the sentinel the error must match with errors.Is
}

// rawIdentity marks the identities of the bad-input table, so that an
// error message that repeats one is caught.
const rawIdentity = "RAW-IDENTITY-"

// TestBadInputEveryEntryPoint calls every public entry point of the package
// with bad values, on a real redis-server holding state of every kind: zero,
// negative and huge rates, periods, bursts, costs (above the burst, and at
// math.MaxInt64 and math.MinInt64), weights and maxima; empty and 1 MB
// identities; namespaces with '{', '}', ':', spaces, non-ASCII bytes or 65
// bytes; nil clients (plain and typed), bad options, bad URLs. Each must
// return a typed error (errors.Is a sentinel) with a "ratelimit:" message
// that does not repeat the identity, change nothing in Redis and publish
// nothing. The miniredis tables (TestBadInput, TestNewBadInput,
// TestMultiBadInput) check the common cases quickly; this one is the
// complete list, on real Redis.
func TestBadInputEveryEntryPoint(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	opts := []Option{WithBus(bus), WithTimeout(5 * time.Second)}

	// Limiters of every kind, with state in Redis for the identity "u".
	lims := map[Algorithm]*Limiter{}
	for _, alg := range limiterAlgorithms {
		lims[alg] = mustNew(t, c, PerMinute(10), append(opts, WithAlgorithm(alg))...)
	}
	multi := mustNewMulti(t, c, []Quota{{Name: "a", Limit: PerMinute(10)}, {Name: "b", Limit: PerHour(100), Algorithm: FixedWindow}}, opts...)
	conc := mustNewConcurrency(t, c, 4, opts...)
	for _, l := range lims {
		if _, err := l.AllowN(ctx, "u", 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := multi.AllowCosts(ctx, "u", 2, 5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conc.Acquire(ctx, "u", 2); err != nil {
		t.Fatal(err)
	}
	// A URL the client parses; the test never dials it.
	goodURL := "redis://" + srv.Addr + "/0"

	huge := rawIdentity + strings.Repeat("x", 1<<20)
	overLong := rawIdentity + strings.Repeat("y", MaxIdentityLen)
	badIDs := []struct{ name, id string }{{"empty", ""}, {"1MB", huge}, {"MaxIdentityLen+1", overLong[:MaxIdentityLen+1]}}

	sec := time.Second
	badLimits := []struct {
		name string
		l    Limit
	}{
		{"zero", Limit{}},
		{"zero rate", Limit{Rate: 0, Per: sec}},
		{"negative rate", Limit{Rate: -1, Per: sec}},
		{"MinInt64 rate", Limit{Rate: math.MinInt64, Per: sec}},
		{"MaxInt64 rate", Limit{Rate: math.MaxInt64, Per: sec}},
		{"zero per", Limit{Rate: 1}},
		{"negative per", Limit{Rate: 1, Per: -sec}},
		{"MinInt64 per", Limit{Rate: 1, Per: math.MinInt64}},
		{"MaxInt64 per", Limit{Rate: 1, Per: math.MaxInt64}},
		{"longest whole-µs per", Limit{Rate: 1, Per: math.MaxInt64 / 1000 * 1000}},
		{"sub-µs per", Limit{Rate: 1, Per: 1500 * time.Nanosecond}},
		{"negative burst", Limit{Rate: 1, Per: sec, Burst: -1}},
		{"MinInt64 burst", Limit{Rate: 1, Per: sec, Burst: math.MinInt64}},
		{"MaxInt64 burst", Limit{Rate: 1, Per: sec, Burst: math.MaxInt64}},
	}
	windowOnly := []struct {
		name string
		l    Limit
	}{
		{"burst above rate", PerSecond(10).WithBurst(11)},
		{"burst below rate", PerSecond(10).WithBurst(9)},
		{"rate past 2^53", PerSecond(maxExact + 1)},
		{"per past 71 years", Limit{Rate: 1, Per: 72 * 365 * 24 * time.Hour}},
	}

	var cases []badCase
	add := func(name string, want error, call func() error) {
		cases = append(cases, badCase{name, call, want})
	}

	// Clients.
	for _, cl := range []struct {
		name string
		c    redis.UniversalClient
	}{{"nil", nil}, {"nil *Client", (*redis.Client)(nil)}, {"nil *ClusterClient", (*redis.ClusterClient)(nil)}, {"nil *Ring", (*redis.Ring)(nil)}} {
		add("New/"+cl.name, ErrNilClient, func() error { _, err := New(cl.c, PerSecond(1)); return err })
		add("NewMulti/"+cl.name, ErrNilClient, func() error {
			_, err := NewMulti(cl.c, []Quota{{Name: "a", Limit: PerSecond(1)}})
			return err
		})
		add("NewConcurrency/"+cl.name, ErrNilClient, func() error { _, err := NewConcurrency(cl.c, 1); return err })
	}

	// Limits, for every algorithm: New, WithLimit, Validate; and in a
	// MultiLimiter quota and WithLimits.
	for _, alg := range limiterAlgorithms {
		l := lims[alg]
		bad := badLimits
		if alg != TokenBucket {
			bad = append(bad, windowOnly...)
		} else {
			bad = append(bad, struct {
				name string
				l    Limit
			}{"burst × per past 2^53", PerHour(1).WithBurst(1 << 40)})
		}
		for _, b := range bad {
			add("New/"+alg.String()+"/"+b.name, ErrInvalidLimit, func() error {
				_, err := New(c, b.l, append(opts, WithAlgorithm(alg))...)
				return err
			})
			add("WithLimit/"+alg.String()+"/"+b.name, ErrInvalidLimit, func() error { _, err := l.WithLimit(b.l); return err })
			add("Validate/"+alg.String()+"/"+b.name, ErrInvalidLimit, func() error { return alg.Validate(b.l) })
			if alg == SlidingLog {
				continue // not available in a MultiLimiter
			}
			add("NewMulti/"+alg.String()+"/"+b.name, ErrInvalidLimit, func() error {
				_, err := NewMulti(c, []Quota{{Name: "a", Limit: PerSecond(1)}, {Name: "b", Limit: b.l, Algorithm: alg}}, opts...)
				return err
			})
			add("WithLimits/"+alg.String()+"/"+b.name, ErrInvalidLimit, func() error {
				_, err := multi.WithLimits(PerMinute(10), b.l)
				return err
			})
		}
	}
	for _, b := range badLimits {
		add("Limit.Validate/"+b.name, ErrInvalidLimit, b.l.Validate)
	}
	add("Validate/concurrency", ErrInvalidOption, func() error { return Concurrency.Validate(PerSecond(1)) })
	add("Validate/unknown algorithm", ErrInvalidOption, func() error { return Algorithm(99).Validate(PerSecond(1)) })

	// Costs, for every algorithm and every method that takes one.
	costs := []int64{-1, math.MinInt64, math.MaxInt64, 11, maxExact + 1}
	for _, alg := range limiterAlgorithms {
		l := lims[alg]
		for _, cost := range costs {
			n := alg.String() + "/" + strconv.FormatInt(cost, 10)
			add("AllowN/"+n, ErrInvalidCost, func() error { _, err := l.AllowN(ctx, "u", cost); return err })
			add("Wait/"+n, ErrInvalidCost, func() error { _, err := l.Wait(ctx, "u", cost); return err })
			add("Refund/"+n, ErrInvalidCost, func() error { _, err := l.Refund(ctx, "u", spentNow(), cost); return err })
			add("BatchAllow/"+n, ErrInvalidCost, func() error {
				res, err := l.BatchAllow(ctx, []Request{{"u", 1}, {"v", cost}})
				if res != nil {
					t.Errorf("BatchAllow returned results with an error")
				}
				return err
			})
		}
		for _, id := range badIDs {
			n := alg.String() + "/" + id.name
			add("Allow/"+n, ErrInvalidIdentity, func() error { _, err := l.Allow(ctx, id.id); return err })
			add("AllowN/"+n, ErrInvalidIdentity, func() error { _, err := l.AllowN(ctx, id.id, 1); return err })
			add("Wait/"+n, ErrInvalidIdentity, func() error { _, err := l.Wait(ctx, id.id, 1); return err })
			add("Peek/"+n, ErrInvalidIdentity, func() error { _, err := l.Peek(ctx, id.id); return err })
			add("Reset/"+n, ErrInvalidIdentity, func() error { return l.Reset(ctx, id.id) })
			add("Refund/"+n, ErrInvalidIdentity, func() error { _, err := l.Refund(ctx, id.id, spentNow(), 1); return err })
			add("Key/"+n, ErrInvalidIdentity, func() error { _, err := l.Key(id.id); return err })
			add("BatchAllow/"+n, ErrInvalidIdentity, func() error {
				_, err := l.BatchAllow(ctx, []Request{{"u", 1}, {id.id, 1}})
				return err
			})
		}
	}

	// The MultiLimiter.
	for _, cs := range [][]int64{nil, {1}, {1, 1, 1}, {-1, 1}, {1, -1}, {math.MinInt64, 1}, {1, math.MaxInt64}, {11, 1}, {1, 101}} {
		n := fmtInts(cs)
		add("AllowCosts/"+n, ErrInvalidCost, func() error { _, err := multi.AllowCosts(ctx, "u", cs...); return err })
		add("MultiRefund/"+n, ErrInvalidCost, func() error { _, err := multi.Refund(ctx, "u", MultiResult{Result: spentNow()}, cs...); return err })
	}
	for _, cost := range costs {
		add("MultiAllowN/"+strconv.FormatInt(cost, 10), ErrInvalidCost, func() error { _, err := multi.AllowN(ctx, "u", cost); return err })
	}
	for _, id := range badIDs {
		add("MultiAllow/"+id.name, ErrInvalidIdentity, func() error { _, err := multi.Allow(ctx, id.id); return err })
		add("MultiAllowCosts/"+id.name, ErrInvalidIdentity, func() error { _, err := multi.AllowCosts(ctx, id.id, 1, 1); return err })
		add("MultiPeek/"+id.name, ErrInvalidIdentity, func() error { _, err := multi.Peek(ctx, id.id); return err })
		add("MultiRefund/"+id.name, ErrInvalidIdentity, func() error { _, err := multi.Refund(ctx, id.id, MultiResult{Result: spentNow()}, 1, 1); return err })
		add("MultiReset/"+id.name, ErrInvalidIdentity, func() error { return multi.Reset(ctx, id.id) })
		add("MultiKeys/"+id.name, ErrInvalidIdentity, func() error { _, err := multi.Keys(id.id); return err })
	}
	many := make([]Quota, MaxQuotas+1)
	for i := range many {
		many[i] = Quota{Name: "q" + strconv.Itoa(i), Limit: PerSecond(1)}
	}
	for _, q := range []struct {
		name   string
		quotas []Quota
	}{
		{"nil", nil},
		{"empty", []Quota{}},
		{"17 quotas", many},
		{"empty name", []Quota{{Limit: PerSecond(1)}}},
		{"name with :", []Quota{{Name: "a:b", Limit: PerSecond(1)}}},
		{"name with {", []Quota{{Name: "a{b", Limit: PerSecond(1)}}},
		{"name with }", []Quota{{Name: "a}b", Limit: PerSecond(1)}}},
		{"name with space", []Quota{{Name: "a b", Limit: PerSecond(1)}}},
		{"non-ASCII name", []Quota{{Name: "quotä", Limit: PerSecond(1)}}},
		{"33-byte name", []Quota{{Name: strings.Repeat("q", 33), Limit: PerSecond(1)}}},
		{"duplicate names", []Quota{{Name: "a", Limit: PerSecond(1)}, {Name: "a", Limit: PerDay(1)}}},
		{"sliding log quota", []Quota{{Name: "a", Limit: PerSecond(1), Algorithm: SlidingLog}}},
		{"concurrency quota", []Quota{{Name: "a", Limit: PerSecond(1), Algorithm: Concurrency}}},
		{"unknown algorithm", []Quota{{Name: "a", Limit: PerSecond(1), Algorithm: Algorithm(99)}}},
	} {
		add("NewMulti/quotas "+q.name, ErrInvalidLimit, func() error { _, err := NewMulti(c, q.quotas, opts...); return err })
	}
	add("WithLimits/too few", ErrInvalidLimit, func() error { _, err := multi.WithLimits(PerSecond(1)); return err })
	add("WithLimits/too many", ErrInvalidLimit, func() error {
		_, err := multi.WithLimits(PerSecond(1), PerSecond(1), PerSecond(1))
		return err
	})

	// The ConcurrencyLimiter and its leases.
	for _, max := range []int64{0, -1, math.MinInt64, math.MaxInt64, maxExact + 1} {
		n := strconv.FormatInt(max, 10)
		add("NewConcurrency/max "+n, ErrInvalidLimit, func() error { _, err := NewConcurrency(c, max, opts...); return err })
		add("WithMax/"+n, ErrInvalidLimit, func() error { _, err := conc.WithMax(max); return err })
	}
	for _, w := range []int64{0, -1, math.MinInt64, math.MaxInt64, 5} {
		add("Acquire/weight "+strconv.FormatInt(w, 10), ErrInvalidCost, func() error {
			lease, _, err := conc.Acquire(ctx, "u", w)
			if lease != nil {
				t.Errorf("a lease for weight %d", w)
			}
			return err
		})
	}
	for _, id := range badIDs {
		add("Acquire/"+id.name, ErrInvalidIdentity, func() error { _, _, err := conc.Acquire(ctx, id.id, 1); return err })
		add("ConcurrencyPeek/"+id.name, ErrInvalidIdentity, func() error { _, err := conc.Peek(ctx, id.id); return err })
		add("ConcurrencyReset/"+id.name, ErrInvalidIdentity, func() error { return conc.Reset(ctx, id.id) })
		add("ConcurrencyKey/"+id.name, ErrInvalidIdentity, func() error { _, err := conc.Key(id.id); return err })
	}

	// Options, on each constructor they apply to.
	ctors := map[string]func(...Option) error{
		"New": func(o ...Option) error { _, err := New(c, PerSecond(1), o...); return err },
		"NewMulti": func(o ...Option) error {
			_, err := NewMulti(c, []Quota{{Name: "a", Limit: PerSecond(1)}}, o...)
			return err
		},
		"NewConcurrency": func(o ...Option) error { _, err := NewConcurrency(c, 1, o...); return err },
	}
	badOpts := []struct {
		name string
		o    []Option
	}{
		{"namespace {", []Option{WithNamespace("a{b")}},
		{"namespace }", []Option{WithNamespace("a}b")}},
		{"namespace :", []Option{WithNamespace("a:b")}},
		{"namespace space", []Option{WithNamespace("a b")}},
		{"namespace unicode", []Option{WithNamespace("näme")}},
		{"namespace NUL", []Option{WithNamespace("a\x00b")}},
		{"namespace newline", []Option{WithNamespace("a\nb")}},
		{"namespace 65 bytes", []Option{WithNamespace(strings.Repeat("n", 65))}},
		{"namespace empty", []Option{WithNamespace("")}},
		{"nil identity key", []Option{WithIdentityKey(nil)}},
		{"15-byte identity key", []Option{WithIdentityKey(make([]byte, 15))}},
		{"zero timeout", []Option{WithTimeout(0)}},
		{"negative timeout", []Option{WithTimeout(-time.Second)}},
		{"MinInt64 timeout", []Option{WithTimeout(math.MinInt64)}},
		{"unknown fail strategy", []Option{WithFailStrategy(2)}},
		{"fail strategy 255", []Option{WithFailStrategy(255)}},
		{"nil bus", []Option{WithBus(nil)}},
		{"shadow and fail closed", []Option{WithShadow(), WithFailStrategy(FailClosed)}},
		{"unknown algorithm", []Option{WithAlgorithm(Algorithm(200))}},
		{"concurrency algorithm", []Option{WithAlgorithm(Concurrency)}},
		{"zero lease TTL", []Option{WithLeaseTTL(0)}},
		{"negative lease TTL", []Option{WithLeaseTTL(-time.Second)}},
		{"lease TTL under 1ms", []Option{WithLeaseTTL(999 * time.Microsecond)}},
		{"sub-µs lease TTL", []Option{WithLeaseTTL(time.Second + time.Nanosecond)}},
		{"MaxInt64 lease TTL", []Option{WithLeaseTTL(math.MaxInt64)}},
		{"lease TTL past 71 years", []Option{WithLeaseTTL(72 * 365 * 24 * time.Hour)}},
		{"nil breaker", []Option{WithBreaker(nil)}},
		{"zero-value breaker", []Option{WithBreaker(&Breaker{})}},
		{"nil SubscriberFunc", []Option{WithSubscribers(SubscriberFunc(nil))}},
		{"typed-nil subscriber", []Option{WithSubscribers((*recorder)(nil))}},
	}
	for name, ctor := range ctors {
		for _, b := range badOpts {
			add(name+"/"+b.name, ErrInvalidOption, func() error { return ctor(b.o...) })
		}
	}
	add("New/lease TTL", ErrInvalidOption, func() error { return ctors["New"](WithLeaseTTL(time.Second)) })
	add("NewMulti/lease TTL", ErrInvalidOption, func() error { return ctors["NewMulti"](WithLeaseTTL(time.Second)) })
	add("NewMulti/algorithm", ErrInvalidOption, func() error { return ctors["NewMulti"](WithAlgorithm(FixedWindow)) })
	add("NewConcurrency/algorithm", ErrInvalidOption, func() error { return ctors["NewConcurrency"](WithAlgorithm(TokenBucket)) })

	for _, bs := range []BreakerSettings{{Failures: -1}, {CoolDown: -time.Second}, {Failures: math.MinInt, CoolDown: math.MinInt64}} {
		add("NewBreaker/"+strconv.Itoa(bs.Failures)+"/"+bs.CoolDown.String(), ErrInvalidOption, func() error {
			b, err := NewBreaker(bs)
			if b != nil {
				t.Errorf("a breaker for %+v", bs)
			}
			return err
		})
	}

	// URLs: none is dialled; the client NewFromURL made is closed again.
	for _, u := range []string{
		"", "localhost:6379", "http://localhost:6379", "redis://localhost:notaport",
		"redis://localhost:6379/x", "redis://localhost:6379/99999999999999999999", "rediss://[::1",
		"redis://localhost:6379/0?dial_timeout=soon", "redis://localhost:6379/0?max_retries=many",
		"redis://localhost:6379/0?nosuchoption=1", "unix://", "redis://:pass@/0\x00",
	} {
		add("NewFromURL/"+strconv.Quote(u), ErrInvalidURL, func() error { _, err := NewFromURL(u, PerSecond(1)); return err })
	}
	add("NewFromURL/bad limit", ErrInvalidLimit, func() error { _, err := NewFromURL(goodURL, PerSecond(0)); return err })
	add("NewFromURL/bad option", ErrInvalidOption, func() error { _, err := NewFromURL(goodURL, PerSecond(1), WithTimeout(0)); return err })

	before := snapshot(t, c)
	dbsize := c.DBSize(ctx).Val()
	if len(before) == 0 {
		t.Fatal("no state in Redis before the table: the test proves nothing")
	}
	published := len(rec.all())
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("case %q twice", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want errors.Is %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "ratelimit:") {
				t.Errorf("message %q lacks the ratelimit: prefix", msg)
			}
			if strings.Contains(msg, rawIdentity) {
				t.Errorf("message repeats the identity: %.80q...", msg)
			}
			if len(msg) > 512 {
				t.Errorf("message of %d bytes", len(msg))
			}
		})
	}
	t.Logf("%d bad inputs", len(cases))
	if after := snapshot(t, c); !equalMaps(before, after) || c.DBSize(ctx).Val() != dbsize {
		t.Errorf("bad input changed Redis:\nbefore %v\nafter  %v", before, after)
	}
	if n := len(rec.all()) - published; n != 0 {
		t.Errorf("bad input published %d events", n)
	}
}

func fmtInts(v []int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.FormatInt(n, 10)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestBadStateEveryEntryPoint calls every entry point that reaches Redis with
// a client already closed, a context already canceled, and a context whose
// deadline has passed. None of these is bad input (the call is valid; it
// cannot reach Redis), so each gives a *BackendError of the matching type
// (connection, canceled, timeout) with a "ratelimit:" message; decisions
// are published once each, with the error, as every decision is, and are
// decided by the fail strategy when the client is closed, and denied with
// ReasonCanceled under either strategy when the caller's own context has
// ended (a caller that gave up is no outage: FailOpen must not let it
// through); the other calls publish nothing. Nothing changes in Redis.
func TestBadStateEveryEntryPoint(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	closed := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})

	type entry struct {
		name     string
		decision bool
		call     func(ctx context.Context) (Result, error)
	}
	// entries builds every call on client for identity id, with state
	// written first through admin-side limiters of the same namespaces.
	entries := func(t *testing.T, client redis.UniversalClient, bus *Bus, fail FailStrategy, id string) []entry {
		opts := []Option{WithBus(bus), WithFailStrategy(fail), WithTimeout(5 * time.Second)}
		var es []entry
		for _, alg := range limiterAlgorithms {
			l := mustNew(t, client, PerMinute(10), append(opts, WithAlgorithm(alg))...)
			w := mustNew(t, admin, PerMinute(10), WithAlgorithm(alg))
			if _, err := w.AllowN(ctx, id, 3); err != nil {
				t.Fatal(err)
			}
			n := alg.String()
			es = append(es,
				entry{n + "/Allow", true, func(ctx context.Context) (Result, error) { return l.Allow(ctx, id) }},
				entry{n + "/AllowN", true, func(ctx context.Context) (Result, error) { return l.AllowN(ctx, id, 2) }},
				entry{n + "/Wait", true, func(ctx context.Context) (Result, error) { return l.Wait(ctx, id, 1) }},
				entry{n + "/BatchAllow", true, func(ctx context.Context) (Result, error) {
					res, err := l.BatchAllow(ctx, []Request{{id, 1}})
					if len(res) != 1 {
						t.Fatalf("BatchAllow: %d results", len(res))
					}
					return res[0], err
				}},
				entry{n + "/Peek", false, func(ctx context.Context) (Result, error) { return l.Peek(ctx, id) }},
				entry{n + "/Refund", false, func(ctx context.Context) (Result, error) { return l.Refund(ctx, id, spentNow(), 1) }},
				entry{n + "/Reset", false, func(ctx context.Context) (Result, error) { return Result{}, l.Reset(ctx, id) }},
			)
		}
		quotas := []Quota{{Name: "a", Limit: PerMinute(10)}, {Name: "b", Limit: PerHour(100), Algorithm: FixedWindow}}
		m := mustNewMulti(t, client, quotas, opts...)
		if _, err := mustNewMulti(t, admin, quotas).Allow(ctx, id); err != nil {
			t.Fatal(err)
		}
		es = append(es,
			entry{"multi/Allow", true, func(ctx context.Context) (Result, error) { r, err := m.Allow(ctx, id); return r.Result, err }},
			entry{"multi/AllowCosts", true, func(ctx context.Context) (Result, error) {
				r, err := m.AllowCosts(ctx, id, 1, 2)
				return r.Result, err
			}},
			entry{"multi/Peek", false, func(ctx context.Context) (Result, error) { r, err := m.Peek(ctx, id); return r.Result, err }},
			entry{"multi/Refund", false, func(ctx context.Context) (Result, error) {
				r, err := m.Refund(ctx, id, MultiResult{Result: spentNow()}, 1, 1)
				return r.Result, err
			}},
			entry{"multi/Reset", false, func(ctx context.Context) (Result, error) { return Result{}, m.Reset(ctx, id) }},
		)
		cc := mustNewConcurrency(t, client, 4, opts...)
		held, _, err := mustNewConcurrency(t, admin, 4).Acquire(ctx, id, 1)
		if err != nil || held == nil {
			t.Fatalf("Acquire: %v", err)
		}
		// A tracked lease of the limiter under test, made on a live
		// client, then pointed at the bad one: its Extend and Release go
		// through cc's seam.
		lease := &Lease{c: cc, keys: held.keys, id: held.id, weight: held.weight, tracked: true}
		es = append(es,
			entry{"concurrency/Acquire", true, func(ctx context.Context) (Result, error) {
				lease, res, err := cc.Acquire(ctx, id, 1)
				if (lease != nil) != res.Allowed {
					t.Errorf("Acquire: lease %v with %+v", lease, res)
				}
				return res, err
			}},
			entry{"concurrency/Peek", false, func(ctx context.Context) (Result, error) { return cc.Peek(ctx, id) }},
			entry{"concurrency/Reset", false, func(ctx context.Context) (Result, error) { return Result{}, cc.Reset(ctx, id) }},
			entry{"lease/Extend", false, func(ctx context.Context) (Result, error) { return Result{}, lease.Extend(ctx) }},
			entry{"lease/Release", false, func(ctx context.Context) (Result, error) { return Result{}, lease.Release(ctx) }},
		)
		return es
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	states := []struct {
		name   string
		client redis.UniversalClient
		ctx    context.Context
		want   ErrorType
	}{
		{"closed client", closed, ctx, ErrorConnection},
		{"canceled context", admin, canceled, ErrorCanceled},
		{"expired context", admin, expired, ErrorTimeout},
	}
	for _, st := range states {
		for _, fail := range []FailStrategy{FailOpen, FailClosed} {
			t.Run(st.name+"/"+fail.String(), func(t *testing.T) {
				rec := &recorder{}
				bus := NewBus()
				bus.Subscribe(rec)
				es := entries(t, st.client, bus, fail, st.name+"/"+fail.String())
				if st.client == closed {
					_ = closed.Close()
				}
				before := snapshot(t, admin)
				wantEvents := 0
				for _, e := range es {
					published := len(rec.all())
					res, err := e.call(st.ctx)
					var be *BackendError
					if !errors.As(err, &be) || be.Type != st.want || !strings.HasPrefix(err.Error(), "ratelimit:") {
						t.Errorf("%s: %v (%T), want a %v *BackendError", e.name, err, err, st.want)
						continue
					}
					events := rec.all()[published:]
					if !e.decision {
						if len(events) != 0 {
							t.Errorf("%s: not a decision, but published %d events", e.name, len(events))
						}
						continue
					}
					wantEvents++
					if st.ctx != ctx {
						if res.Allowed || res.Reason != ReasonCanceled {
							t.Errorf("%s: result %+v with the caller's context ended, want a denial with ReasonCanceled", e.name, res)
						}
					} else if msg := (faultKind{name: e.name, fail: fail}).checkFailed(res, err, st.want); msg != "" {
						t.Errorf("%s", msg)
					}
					if len(events) != 1 || !errors.Is(events[0].Err, ErrBackend) || events[0].Result != res {
						t.Errorf("%s: published %+v, want one event with the error and the result", e.name, events)
					}
				}
				if after := snapshot(t, admin); !equalMaps(before, after) {
					t.Errorf("Redis changed:\nbefore %v\nafter  %v", before, after)
				}
				if wantEvents < 10 {
					t.Fatalf("only %d decisions checked", wantEvents)
				}
			})
		}
	}
}
