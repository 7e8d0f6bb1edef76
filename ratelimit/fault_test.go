package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file drives real redis-server processes into the failures users meet
// (a hung server, a restart, killed connections, a flushed script cache, a
// full memory, a runaway script) and checks that every entry point answers
// as README's "What happens when Redis misbehaves" says: in bounded time,
// decided by the fail strategy, with a typed error that is also published.

// faultQuota is the limit of every kind in the fault tables: five calls,
// then a denial.
const faultQuota = 5

// faultKind is one way to ask the library for a decision: a Limiter of each
// algorithm, a MultiLimiter, a ConcurrencyLimiter. call makes one decision
// of cost 1 and reports the Result the caller got.
type faultKind struct {
	name    string
	ns      string
	fail    FailStrategy
	scripts []*redis.Script
	library bool // decides with FCALL of the functions library
	call    func(ctx context.Context, id string) (Result, error)
	peek    func(ctx context.Context, id string) (Result, error)
}

// faultKinds returns one faultKind per algorithm family, all on client with
// fail strategy fail, in namespaces of their own ("<prefix>-<kind>").
func faultKinds(t testing.TB, client redis.UniversalClient, prefix string, fail FailStrategy, opts ...Option) []faultKind {
	t.Helper()
	var kinds []faultKind
	with := func(name string) []Option {
		return append(slices.Clone(opts), WithNamespace(prefix+"-"+name), WithFailStrategy(fail))
	}
	for _, alg := range limiterAlgorithms {
		// A fixed window starts afresh at its boundary: a day's, so that a
		// test's calls do not straddle one (with a minute's, TestBusyScript failed
		// now and then at the minute's end).
		lim := PerMinute(faultQuota)
		if alg == FixedWindow {
			lim = PerDay(faultQuota)
		}
		l := mustNew(t, client, lim, append(with(alg.String()), WithAlgorithm(alg))...)
		kinds = append(kinds, faultKind{
			name: alg.String(), ns: l.Namespace(), fail: fail, library: true,
			call: func(ctx context.Context, id string) (Result, error) { return l.Allow(ctx, id) },
			peek: l.Peek,
		})
	}
	m := mustNewMulti(t, client, []Quota{
		{Name: "minute", Limit: PerMinute(faultQuota)},
		{Name: "day", Limit: PerDay(100 * faultQuota), Algorithm: FixedWindow},
	}, with("multi")...)
	kinds = append(kinds, faultKind{
		name: "multi", ns: m.Namespace(), fail: fail, scripts: []*redis.Script{multiScript},
		call: func(ctx context.Context, id string) (Result, error) {
			res, err := m.Allow(ctx, id)
			return res.Result, err
		},
		peek: func(ctx context.Context, id string) (Result, error) {
			res, err := m.Peek(ctx, id)
			return res.Result, err
		},
	})
	c := mustNewConcurrency(t, client, faultQuota, with("concurrency")...)
	kinds = append(kinds, faultKind{
		name: "concurrency", ns: c.Namespace(), fail: fail, scripts: []*redis.Script{concurrencyScript},
		call: func(ctx context.Context, id string) (Result, error) {
			lease, res, err := c.Acquire(ctx, id, 1)
			if res.Allowed != (lease != nil) {
				t.Errorf("concurrency: lease %v with %+v", lease, res)
			}
			return res, err // the lease is never released: it expires
		},
		peek: c.Peek,
	})
	return kinds
}

// faultKindsBoth returns the faultKinds of both fail strategies on client
// (namespaces "open-..." and "closed-..."), publishing to one bus with a
// recorder, returned too.
func faultKindsBoth(t testing.TB, client redis.UniversalClient, opts ...Option) ([]faultKind, *recorder) {
	t.Helper()
	rec := &recorder{}
	bus := NewBus()
	bus.Subscribe(rec)
	opts = append(slices.Clone(opts), WithBus(bus))
	return append(faultKinds(t, client, "open", FailOpen, opts...), faultKinds(t, client, "closed", FailClosed, opts...)...), rec
}

func (k faultKind) failReason() Reason {
	if k.fail == FailClosed {
		return ReasonFailClosed
	}
	return ReasonFailOpen
}

// checkFailed reports, as a string for t.Errorf, what is wrong with a call
// that should have been decided by the fail strategy because of a backend
// error of one of the types want; "" when nothing is.
func (k faultKind) checkFailed(res Result, err error, want ...ErrorType) string {
	var be *BackendError
	switch {
	case !errors.As(err, &be) || !errors.Is(err, ErrBackend):
		return fmt.Sprintf("%s/%v: error %v (%T), want a *BackendError", k.name, k.fail, err, err)
	case !slices.Contains(want, be.Type):
		return fmt.Sprintf("%s/%v: error type %v (%v), want one of %v", k.name, k.fail, be.Type, err, want)
	case res.Reason != k.failReason() || res.Allowed != (k.fail == FailOpen):
		return fmt.Sprintf("%s/%v: result %+v, want the fail strategy's", k.name, k.fail, res)
	case !strings.HasPrefix(err.Error(), "ratelimit:"):
		return fmt.Sprintf("%s/%v: message %q lacks the ratelimit: prefix", k.name, k.fail, err)
	}
	return ""
}

// checkEvents checks that events holds one event per call for the kinds,
// each carrying a *BackendError of a type in want and the fail strategy's
// reason, and returns how many there were.
func checkEvents(t *testing.T, events []Event, kinds []faultKind, want ...ErrorType) {
	t.Helper()
	byNS := map[string]faultKind{}
	for _, k := range kinds {
		byNS[k.ns] = k
	}
	for _, e := range events {
		k, ok := byNS[e.Namespace]
		if !ok {
			t.Errorf("event from an unknown namespace %q", e.Namespace)
			continue
		}
		if msg := k.checkFailed(e.Result, e.Err, want...); msg != "" {
			t.Errorf("published: %s", msg)
		}
	}
}

// pollUntil calls f every 10 ms until it returns true or within passes, and
// reports whether it did.
func pollUntil(within time.Duration, f func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recoverKinds polls every kind until Redis decides again (bounded), and
// returns the first result each got from Redis.
func recoverKinds(t *testing.T, kinds []faultKind, id string) []Result {
	t.Helper()
	out := make([]Result, len(kinds))
	for i, k := range kinds {
		var res Result
		var err error
		if !pollUntil(10*time.Second, func() bool {
			res, err = k.call(context.Background(), id)
			return err == nil
		}) {
			t.Fatalf("%s/%v: Redis did not decide again within 10s: %v", k.name, k.fail, err)
		}
		if res.Reason != ReasonQuota {
			t.Errorf("%s/%v after recovery: %+v", k.name, k.fail, res)
		}
		out[i] = res
	}
	return out
}

// waitGoroutines waits (bounded) until at most limit goroutines run, and
// reports the last count.
func waitGoroutines(limit int, within time.Duration) (int, bool) {
	n := runtime.NumGoroutine()
	ok := pollUntil(within, func() bool {
		n = runtime.NumGoroutine()
		return n <= limit
	})
	return n, ok
}

// latencySummary is what the pause test reports for the closing note.
type latencySummary struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(ds []time.Duration) latencySummary {
	if len(ds) == 0 {
		return latencySummary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return latencySummary{n: len(s), p50: at(0.50), p99: at(0.99), max: s[len(s)-1]}
}
