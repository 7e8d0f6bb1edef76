package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// changeRecorder is a BreakerSubscriber that keeps the changes it sees.
type changeRecorder struct {
	recorder
	mu      sync.Mutex
	changes []BreakerChange
}

func (r *changeRecorder) OnBreakerChange(_ context.Context, c BreakerChange) {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
}

// transitions returns the changes as "from>to" strings.
func (r *changeRecorder) transitions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.changes {
		out = append(out, c.From.String()+">"+c.To.String())
	}
	return out
}

func mustBreaker(t testing.TB, s BreakerSettings) *Breaker {
	t.Helper()
	b, err := NewBreaker(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBreakerStateMachine drives a breaker through its states on a clock
// of the test's own: consecutive failures open it, answered calls reset the
// count, neutral outcomes count neither way, the cool-down lets exactly one
// probe through, and the probe's outcome closes or reopens it. Every change
// is published once, in order.
func TestBreakerStateMachine(t *testing.T) {
	b := mustBreaker(t, BreakerSettings{Failures: 3, CoolDown: time.Second})
	now := base
	b.now = func() time.Time { return now }
	rec := &changeRecorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	b.attach(bus, "ns", TokenBucket)
	b.attach(bus, "ns", TokenBucket) // once only
	ctx := context.Background()
	timeout := &BackendError{Type: ErrorTimeout}
	call := func(outcome int, err *BackendError) (ok, probe bool) {
		t.Helper()
		ok, probe = b.allow(ctx)
		if ok {
			b.record(ctx, probe, outcome, err)
		}
		return ok, probe
	}
	want := func(state BreakerState, transitions ...string) {
		t.Helper()
		if b.State() != state {
			t.Fatalf("state %v, want %v", b.State(), state)
		}
		if got := strings.Join(rec.transitions(), " "); got != strings.Join(transitions, " ") {
			t.Fatalf("changes %q, want %q", got, transitions)
		}
	}

	call(outcomeFailure, timeout)
	call(outcomeFailure, timeout)
	call(outcomeSuccess, nil) // Redis answered: the count starts again
	call(outcomeFailure, timeout)
	call(outcomeFailure, timeout)
	call(outcomeNeutral, nil) // canceled: no count either way
	want(BreakerClosed)
	call(outcomeFailure, timeout) // the third in a row
	want(BreakerOpen, "closed>open")
	if c := rec.changes[0]; c.Namespace != "ns" || c.Algorithm != TokenBucket || c.Err != timeout || !c.At.Equal(now) {
		t.Fatalf("change %+v", c)
	}
	if ok, _ := call(outcomeSuccess, nil); ok {
		t.Fatal("an open breaker let a call through")
	}
	now = now.Add(999 * time.Millisecond)
	if ok, _ := call(outcomeSuccess, nil); ok {
		t.Fatal("let a call through before the cool-down")
	}

	now = now.Add(time.Millisecond)
	ok, probe := b.allow(ctx)
	if !ok || !probe {
		t.Fatalf("after the cool-down: ok=%v probe=%v, want the probe", ok, probe)
	}
	want(BreakerHalfOpen, "closed>open", "open>half_open")
	if ok, _ := b.allow(ctx); ok {
		t.Fatal("a second call went through while the probe is in flight")
	}
	b.record(ctx, true, outcomeFailure, timeout)
	want(BreakerOpen, "closed>open", "open>half_open", "half_open>open")
	now = now.Add(500 * time.Millisecond)
	if ok, _ := b.allow(ctx); ok {
		t.Fatal("a failed probe did not start a new cool-down")
	}

	now = now.Add(500 * time.Millisecond)
	_, probe = b.allow(ctx)
	b.record(ctx, probe, outcomeNeutral, nil) // the probe's caller gave up
	want(BreakerHalfOpen, "closed>open", "open>half_open", "half_open>open", "open>half_open")
	ok, probe = b.allow(ctx)
	if !ok || !probe {
		t.Fatal("after a neutral probe the next call does not probe")
	}
	b.record(ctx, true, outcomeSuccess, nil)
	want(BreakerClosed, "closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed")
	// Closed again, with the count from zero.
	call(outcomeFailure, timeout)
	call(outcomeFailure, timeout)
	want(BreakerClosed, "closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed")
}

func TestBreakerOutcomes(t *testing.T) {
	for _, tc := range []struct {
		err         *BackendError
		callerFirst bool
		want        int
	}{
		{nil, false, outcomeSuccess},
		{&BackendError{Type: ErrorTimeout}, false, outcomeFailure},
		{&BackendError{Type: ErrorTimeout}, true, outcomeNeutral},
		{&BackendError{Type: ErrorConnection}, false, outcomeFailure},
		{&BackendError{Type: ErrorCanceled}, false, outcomeNeutral},
		{&BackendError{Type: ErrorOther}, false, outcomeNeutral},
		{&BackendError{Type: ErrorScript, Code: "BUSY"}, false, outcomeFailure},
		{&BackendError{Type: ErrorScript, Code: "OOM"}, false, outcomeFailure},
		{&BackendError{Type: ErrorScript, Code: "LOADING"}, false, outcomeFailure},
		{&BackendError{Type: ErrorScript, Code: "CLUSTERDOWN"}, false, outcomeFailure},
		{&BackendError{Type: ErrorScript, Code: "NOPERM"}, false, outcomeSuccess},
		{&BackendError{Type: ErrorScript, Code: "ERR"}, false, outcomeSuccess},
		{&BackendError{Type: ErrorScript, Code: "WRONGTYPE"}, false, outcomeSuccess},
	} {
		if got := breakerOutcome(tc.err, tc.callerFirst); got != tc.want {
			t.Errorf("%+v (caller first %v): outcome %d, want %d", tc.err, tc.callerFirst, got, tc.want)
		}
	}
}

// TestBreakerHungRedis: with a breaker, calls to a hung Redis (SIGSTOP)
// wait for the backend timeout only until the breaker opens; then they are
// decided by the fail strategy at once, with an ErrorCircuitOpen error
// returned and published (untimed). A probe after the cool-down that fails
// reopens it; once Redis is back, the next probe closes it, and decisions
// come from Redis again. Changes are published in order.
func TestBreakerHungRedis(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	const timeout, coolDown = time.Second, 300 * time.Millisecond
	br := mustBreaker(t, BreakerSettings{Failures: 3, CoolDown: coolDown})
	rec := &changeRecorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	open := mustNew(t, c, PerMinute(100), WithBus(bus), WithTimeout(timeout), WithBreaker(br), WithNamespace("open"))
	closed := mustNew(t, c, PerMinute(100), WithBus(bus), WithTimeout(timeout), WithBreaker(br), WithNamespace("closed"),
		WithFailStrategy(FailClosed))
	for _, l := range []*Limiter{open, closed} {
		if _, err := l.Allow(ctx, "u"); err != nil {
			t.Fatal(err)
		}
	}

	srv.Pause()
	defer srv.Resume()
	// Three calls in parallel time out together and open the breaker.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := open.Allow(ctx, "u"); !errors.Is(err, ErrBackend) {
				t.Errorf("paused: %v", err)
			}
		}()
	}
	wg.Wait()
	if br.State() != BreakerOpen {
		t.Fatalf("breaker %v after 3 timeouts, want open", br.State())
	}
	before := len(rec.all())
	var slowest time.Duration
	for i := range 20 {
		l := []*Limiter{open, closed}[i%2]
		start := time.Now()
		res, err := l.Allow(ctx, "u")
		slowest = max(slowest, time.Since(start))
		var be *BackendError
		if !errors.As(err, &be) || be.Type != ErrorCircuitOpen || !errors.Is(err, ErrCircuitOpen) || !errors.Is(err, ErrBackend) {
			t.Fatalf("open breaker: %v (%+v)", err, be)
		}
		if want := l == open; res.Allowed != want || (res.Reason == ReasonFailOpen) != want {
			t.Fatalf("%s: %+v, want the fail strategy's", l.Namespace(), res)
		}
		if !strings.HasPrefix(err.Error(), "ratelimit:") || ErrorTypeOf(err).String() != "circuit_open" {
			t.Fatalf("error %q, type %q", err, ErrorTypeOf(err))
		}
	}
	t.Logf("FIGURES breaker open: 20 calls, slowest %v, against a backend timeout of %v", slowest, timeout)
	// Not a speed assertion: a call that went to the hung Redis would take
	// the full second.
	if slowest >= timeout/2 {
		t.Errorf("a call took %v with the breaker open: it waited for Redis", slowest)
	}
	events := rec.all()[before:]
	if len(events) != 20 {
		t.Fatalf("%d events for 20 calls", len(events))
	}
	for _, e := range events {
		var be *BackendError
		if !errors.As(e.Err, &be) || be.Type != ErrorCircuitOpen || !e.Start.IsZero() || e.Duration != 0 || e.Result.Reason == ReasonQuota {
			t.Fatalf("published %+v", e)
		}
	}

	// The cool-down passes with Redis still hung: the probe times out and
	// the breaker opens again.
	var probeErr error
	if !pollUntil(5*time.Second, func() bool {
		_, probeErr = open.Allow(ctx, "u")
		return !errors.Is(probeErr, ErrCircuitOpen)
	}) {
		t.Fatal("no probe within 5s of a 300ms cool-down")
	}
	if be := (*BackendError)(nil); !errors.As(probeErr, &be) || be.Type != ErrorTimeout {
		t.Fatalf("the probe: %v, want a timeout from Redis", probeErr)
	}
	if br.State() != BreakerOpen {
		t.Fatalf("breaker %v after a failed probe", br.State())
	}

	srv.Resume()
	var res Result
	if !pollUntil(10*time.Second, func() bool {
		var err error
		res, err = closed.Allow(ctx, "u")
		return err == nil
	}) {
		t.Fatal("decisions did not come from Redis again")
	}
	if res.Reason != ReasonQuota || br.State() != BreakerClosed {
		t.Fatalf("after recovery: %+v, breaker %v", res, br.State())
	}
	// Each change is published for both limiters (one bus, two namespaces).
	var got []string
	rec.mu.Lock()
	for _, c := range rec.changes {
		got = append(got, c.Namespace+":"+c.From.String()+">"+c.To.String())
	}
	rec.mu.Unlock()
	want := "open:closed>open closed:closed>open open:open>half_open closed:open>half_open open:half_open>open closed:half_open>open " +
		"open:open>half_open closed:open>half_open open:half_open>closed closed:half_open>closed"
	if strings.Join(got, " ") != want {
		t.Fatalf("changes\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
}

// TestBreakerShared: one breaker shared by a Limiter, a MultiLimiter and a
// ConcurrencyLimiter on separate buses. Failures of the first open it for
// all, and each bus hears of it under its own namespace and algorithms (a
// MultiLimiter's under each of its quotas' algorithms). BatchAllow and the
// leases go through it too.
func TestBreakerShared(t *testing.T) {
	srv := redistestStart(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	br := mustBreaker(t, BreakerSettings{Failures: 2, CoolDown: time.Hour})
	recs := []*changeRecorder{{}, {}, {}}
	l := mustNew(t, c, PerMinute(10), WithBreaker(br), WithSubscribers(recs[0]), WithNamespace("a"), WithTimeout(2*time.Second))
	m := mustNewMulti(t, c, []Quota{{Name: "s", Limit: PerSecond(5)}, {Name: "d", Limit: PerDay(50), Algorithm: FixedWindow}},
		WithBreaker(br), WithSubscribers(recs[1]), WithNamespace("m"), WithTimeout(2*time.Second))
	conc := mustNewConcurrency(t, c, 2, WithBreaker(br), WithSubscribers(recs[2]), WithNamespace("c"), WithTimeout(2*time.Second))
	lease, _, err := conc.Acquire(ctx, "u", 1)
	if err != nil || lease == nil {
		t.Fatal(err)
	}

	srv.Stop()
	for range 2 {
		if _, err := l.Allow(ctx, "u"); !errors.Is(err, ErrBackend) || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("Redis down: %v", err)
		}
	}
	if br.State() != BreakerOpen {
		t.Fatalf("breaker %v", br.State())
	}
	isOpen := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCircuitOpen) {
			t.Errorf("%s: %v, want the open breaker's error", what, err)
		}
	}
	_, err = m.Allow(ctx, "u")
	isOpen("multi", err)
	_, _, err = conc.Acquire(ctx, "u", 1)
	isOpen("acquire", err)
	isOpen("extend", lease.Extend(ctx))
	isOpen("release", lease.Release(ctx))
	_, err = l.Peek(ctx, "u")
	isOpen("peek", err)
	_, err = l.Refund(ctx, "u", spentNow(), 1)
	isOpen("refund", err)
	results, err := l.BatchAllow(ctx, []Request{{"a", 1}, {"b", 1}})
	isOpen("batch", err)
	if len(results) != 2 || results[0].Reason != ReasonFailOpen || results[1].Reason != ReasonFailOpen {
		t.Errorf("batch results %+v", results)
	}
	for i, want := range []string{"a/token_bucket", "m/token_bucket m/fixed_window", "c/concurrency"} {
		var got []string
		for _, ch := range recs[i].changes {
			if ch.To != BreakerOpen || !errors.Is(ch.Err, ErrBackend) {
				t.Errorf("change %+v", ch)
			}
			got = append(got, ch.Namespace+"/"+ch.Algorithm.String())
		}
		if strings.Join(got, " ") != want {
			t.Errorf("bus %d heard %q, want %q", i, got, want)
		}
	}
}

// TestBreakerIgnores: errors that show Redis answering (NOPERM from an ACL),
// calls the caller canceled, and timeouts of the caller's own short
// deadline never open the breaker; a closed one costs nothing visible.
func TestBreakerIgnores(t *testing.T) {
	srv := redistestStart(t)
	admin := srv.Client(t)
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "limited", "on", ">pw", "~allowed:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "limited", Password: "pw", ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	br := mustBreaker(t, BreakerSettings{Failures: 2, CoolDown: time.Hour})
	rec := &changeRecorder{}
	denied := mustNew(t, c, PerMinute(10), WithBreaker(br), WithSubscribers(rec), WithNamespace("denied"), WithTimeout(2*time.Second))
	for range 5 {
		var be *BackendError
		if _, err := denied.Allow(ctx, "u"); !errors.As(err, &be) || be.Code != "NOPERM" {
			t.Fatalf("outside the ACL's keys: %v", err)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	allowed := mustNew(t, c, PerMinute(10), WithBreaker(br), WithSubscribers(rec), WithNamespace("allowed"), WithTimeout(2*time.Second))
	for range 5 {
		if _, err := allowed.Allow(canceled, "u"); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled: %v", err)
		}
	}
	srv.Pause()
	for range 3 {
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := allowed.Allow(short, "u")
		cancel()
		var be *BackendError
		if !errors.As(err, &be) || be.Type != ErrorTimeout {
			t.Fatalf("short deadline: %v", err)
		}
	}
	srv.Resume()
	if br.State() != BreakerClosed || len(rec.transitions()) != 0 {
		t.Fatalf("breaker %v, changes %v: opened on errors that were not Redis's", br.State(), rec.transitions())
	}
	if res, err := allowed.Allow(ctx, "u"); err != nil || res.Reason != ReasonQuota {
		t.Fatalf("closed breaker: %+v %v", res, err)
	}
}

// TestBreakerConcurrentChanges hammers one breaker from many goroutines
// with random outcomes and a cool-down of zero length in effect (the test
// clock jumps): the changes published must still form one valid sequence,
// each starting from the state the previous one ended in, and at most one
// probe may be in flight at a time.
func TestBreakerConcurrentChanges(t *testing.T) {
	b := mustBreaker(t, BreakerSettings{Failures: 2, CoolDown: time.Millisecond})
	var clock sync.Mutex
	now := base
	b.now = func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		now = now.Add(time.Millisecond) // every look at the clock ends a cool-down
		return now
	}
	rec := &changeRecorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	b.attach(bus, "ns", TokenBucket)
	ctx := context.Background()
	var probes, maxProbes, calls int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				ok, probe := b.allow(ctx)
				if !ok {
					continue
				}
				mu.Lock()
				calls++
				if probe {
					probes++
					maxProbes = max(maxProbes, probes)
				}
				mu.Unlock()
				// Two failures in a row in every goroutine's own sequence:
				// the breaker opens (Failures: 2) even when the scheduler
				// runs one goroutine at a time.
				outcome := []int{outcomeFailure, outcomeFailure, outcomeSuccess, outcomeNeutral}[(g+i)%4]
				var err *BackendError
				if outcome == outcomeFailure {
					err = &BackendError{Type: ErrorTimeout}
				}
				if probe {
					mu.Lock()
					probes--
					mu.Unlock()
				}
				b.record(ctx, probe, outcome, err)
			}
		}()
	}
	wg.Wait()
	rec.mu.Lock()
	changes := append([]BreakerChange(nil), rec.changes...)
	rec.mu.Unlock()
	if len(changes) < 10 {
		t.Fatalf("only %d changes in %d calls: the test did not exercise the breaker", len(changes), calls)
	}
	state := BreakerClosed
	for i, c := range changes {
		valid := c.From == BreakerClosed && c.To == BreakerOpen ||
			c.From == BreakerOpen && c.To == BreakerHalfOpen ||
			c.From == BreakerHalfOpen && (c.To == BreakerOpen || c.To == BreakerClosed)
		if c.From != state || !valid {
			t.Fatalf("change %d: %v -> %v after the breaker was %v", i, c.From, c.To, state)
		}
		state = c.To
	}
	if state != b.State() {
		t.Fatalf("the last change ended in %v, the breaker is %v", state, b.State())
	}
	if maxProbes > 1 {
		t.Fatalf("%d probes in flight at once", maxProbes)
	}
	t.Logf("%d calls let through, %d changes", calls, len(changes))
}

// BenchmarkBreaker measures what a closed breaker adds to every call from
// many goroutines: allow and record. (Compared with
// github.com/sony/gobreaker/v2's two-step Allow and done, which takes a
// mutex and allocates its done func on every call: see the issue note.)
func BenchmarkBreaker(b *testing.B) {
	br, err := NewBreaker(BreakerSettings{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ok, probe := br.allow(ctx)
			if !ok {
				b.Fatal("closed breaker refused a call")
			}
			br.record(ctx, probe, breakerOutcome(nil, false), nil)
		}
	})
}
