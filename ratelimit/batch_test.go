package ratelimit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestBatchAllow decides a batch in which one identity appears three times:
// every result is the one AllowN would have given, in order, and each is
// published as its own event.
func TestBatchAllow(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			rec := &recorder{}
			l := mustNew(t, b.client, PerMinute(60).WithBurst(5), append(b.opts, WithSubscribers(rec))...)
			ctx := context.Background()
			reqs := []Request{
				{Identity: "alice", Cost: 2},
				{Identity: "bob", Cost: 5},
				{Identity: "alice", Cost: 2},
				{Identity: "alice", Cost: 2}, // 1 left: denied
				{Identity: "carol", Cost: 0},
			}
			results, err := l.BatchAllow(ctx, reqs)
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				allowed   bool
				remaining int64
				retry     time.Duration
			}{
				{true, 3, 0},
				{true, 0, 0},
				{true, 1, 0},
				{false, 1, time.Second}, // one more token at 1 a second
				{true, 5, 0},
			}
			if len(results) != len(reqs) {
				t.Fatalf("%d results for %d requests", len(results), len(reqs))
			}
			for i, w := range want {
				r := results[i]
				if r.Allowed != w.allowed || r.Remaining != w.remaining || r.RetryAfter != w.retry || r.Reason != ReasonQuota {
					t.Errorf("request %d %+v: got %+v, want allowed=%v remaining=%d retry=%v", i, reqs[i], r, w.allowed, w.remaining, w.retry)
				}
			}
			events := rec.all()
			if len(events) != len(reqs) {
				t.Fatalf("%d events, want one per request (%d)", len(events), len(reqs))
			}
			for i, e := range events {
				key, _ := l.Key(reqs[i].Identity)
				if e.Key != key || e.Cost != reqs[i].Cost || e.Result != results[i] || e.Err != nil || e.Start.IsZero() {
					t.Errorf("event %d: %+v, want key %s cost %d result %+v", i, e, key, reqs[i].Cost, results[i])
				}
			}
			// The same requests one by one through AllowN, on a limiter of
			// its own namespace, give the same results: BatchAllow sends what
			// AllowN sends.
			single := mustNew(t, b.client, PerMinute(60).WithBurst(5), append(b.opts, WithNamespace("single"))...)
			for i, r := range reqs {
				res, err := single.AllowN(ctx, r.Identity, r.Cost)
				if err != nil || res != results[i] {
					t.Errorf("request %d: AllowN gives %+v %v, BatchAllow gave %+v", i, res, err, results[i])
				}
			}
			// The batch spent what it said: alice has 1 token left.
			if res, err := l.Peek(ctx, "alice"); err != nil || res.Remaining != 1 {
				t.Errorf("Peek(alice) after the batch: %+v %v", res, err)
			}
		})
	}
}

// TestBatchAllowBadInput: one bad request rejects the whole batch before
// anything is decided or published.
func TestBatchAllowBadInput(t *testing.T) {
	b := miniBackend(t)
	rec := &recorder{}
	l := mustNew(t, b.client, PerMinute(10), WithSubscribers(rec))
	ctx := context.Background()
	cases := []struct {
		reqs []Request
		want error
		idx  string
	}{
		{[]Request{{"a", 1}, {"b", -1}}, ErrInvalidCost, "request 1"},
		{[]Request{{"a", 1}, {"b", 11}}, ErrInvalidCost, "request 1"},
		{[]Request{{"", 1}}, ErrInvalidIdentity, "request 0"},
		{[]Request{{"a", 1}, {"b", 1}, {strings.Repeat("x", MaxIdentityLen+1), 1}}, ErrInvalidIdentity, "request 2"},
	}
	for _, tc := range cases {
		results, err := l.BatchAllow(ctx, tc.reqs)
		if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "ratelimit:") || !strings.Contains(err.Error(), tc.idx) {
			t.Errorf("BatchAllow(%v): %v, want %v naming %q", tc.reqs, err, tc.want, tc.idx)
		}
		if results != nil {
			t.Errorf("BatchAllow(%v) returned results with an error", tc.reqs)
		}
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("%d events published for rejected batches", n)
	}
	if res, err := l.Peek(ctx, "a"); err != nil || res.Remaining != 10 {
		t.Errorf("a rejected batch spent tokens: %+v %v", res, err)
	}
	if results, err := l.BatchAllow(ctx, nil); results != nil || err != nil {
		t.Errorf("empty batch: %v %v", results, err)
	}
}

// TestBatchAllowRedisDown: with Redis stopped every request gets the fail
// strategy's result and an event with the error; the error returned is a
// *BackendError.
func TestBatchAllowRedisDown(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	rec := &recorder{}
	l := mustNew(t, c, PerMinute(10), WithFailStrategy(FailClosed), WithSubscribers(rec))
	srv.Stop()
	results, err := l.BatchAllow(context.Background(), []Request{{"a", 1}, {"b", 1}, {"a", 1}})
	var be *BackendError
	if !errors.As(err, &be) || !errors.Is(err, ErrBackend) {
		t.Fatalf("BatchAllow on a stopped Redis: %v, want a *BackendError", err)
	}
	if len(results) != 3 {
		t.Fatalf("%d results, want 3", len(results))
	}
	for i, r := range results {
		if r.Allowed || r.Reason != ReasonFailClosed {
			t.Errorf("result %d: %+v, want the fail-closed denial", i, r)
		}
	}
	events := rec.all()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	for i, e := range events {
		if !errors.Is(e.Err, ErrBackend) || e.Result.Reason != ReasonFailClosed {
			t.Errorf("event %d: %+v", i, e)
		}
	}
}

// TestBatchAllowOnePipeline: a batch is one round trip, whatever its size,
// and on one Redis one script call for all its decisions.
func TestBatchAllowOnePipeline(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	hook := &pipelineHook{}
	c.AddHook(hook)
	l := mustNew(t, c, PerMinute(10))
	if _, err := l.Allow(context.Background(), "warm-up"); err != nil { // the script is cached
		t.Fatal(err)
	}
	hook.reset()
	reqs := make([]Request, 100)
	for i := range reqs {
		reqs[i] = Request{Identity: "id-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Cost: 1}
	}
	if _, err := l.BatchAllow(context.Background(), reqs); err != nil {
		t.Fatal(err)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.sizes) != 1 || hook.sizes[0] != 1 || hook.decisions[0] != len(reqs) {
		t.Errorf("round trips of %v commands and %v decisions, want one call of %d", hook.sizes, hook.decisions, len(reqs))
	}
}

// TestBatchOneDecisionFails: in one script call of several decisions, a
// decision whose key holds a foreign value (WRONGTYPE) fails alone, with
// the error Redis gave it; the others are decided. (Real Redis only:
// miniredis reports a command's error inside a script as a compile error.)
func TestBatchOneDecisionFails(t *testing.T) {
	for _, b := range []backend{realBackend(t)} {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			for _, alg := range limiterAlgorithms {
				l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithAlgorithm(alg), WithNamespace("onefails"), WithFailStrategy(FailClosed))...)
				bad := mustKey(t, l, "bad")
				if err := b.client.RPush(ctx, bad, "x").Err(); err != nil {
					t.Fatal(err)
				}
				results, err := l.BatchAllow(ctx, []Request{{"a", 1}, {"bad", 1}, {"c", 2}})
				var be *BackendError
				if !errors.As(err, &be) || be.Type != ErrorScript || be.Code != "WRONGTYPE" {
					t.Fatalf("%v: error %v, want the WRONGTYPE of the bad key", alg, err)
				}
				if !results[0].Allowed || results[0].Remaining != 9 || !results[2].Allowed || results[2].Remaining != 8 {
					t.Errorf("%v: the other decisions %+v %+v, want decided by Redis", alg, results[0], results[2])
				}
				if results[1].Allowed || results[1].Reason != ReasonFailClosed {
					t.Errorf("%v: the failed decision %+v, want the fail strategy's", alg, results[1])
				}
				if err := b.client.Del(ctx, bad).Err(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
