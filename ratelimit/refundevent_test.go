package ratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// refunds records the RefundEvents and decisions a bus delivers.
type refunds struct {
	mu        sync.Mutex
	refunds   []RefundEvent
	decisions int
}

func (r *refunds) OnDecision(context.Context, Event) {
	r.mu.Lock()
	r.decisions++
	r.mu.Unlock()
}

func (r *refunds) OnRefundEvent(_ context.Context, e RefundEvent) {
	r.mu.Lock()
	r.refunds = append(r.refunds, e)
	r.mu.Unlock()
}

func (r *refunds) take() ([]RefundEvent, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out, n := r.refunds, r.decisions
	r.refunds, r.decisions = nil, 0
	return out, n
}

// TestRefundEvents: a Refund, of a Limiter and of a MultiLimiter (one
// event per quota given something back), is published to RefundSubscribers with what was given
// back and the state after it, timed; a subscriber of decisions only never
// sees it; a bad amount publishes nothing; a refund Redis failed is
// published with its error and a zero Result.
func TestRefundEvents(t *testing.T) {
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	rec, plain := &refunds{}, &recorder{}
	var hooked []RefundEvent
	opts := []Option{WithSubscribers(rec, plain, Hooks{OnRefund: func(_ context.Context, r RefundEvent) { hooked = append(hooked, r) }})}

	l := mustNew(t, c, PerMinute(10), append(opts, WithNamespace("refunds"))...)
	spent, err := l.AllowN(ctx, "u", 6)
	if err != nil || !spent.Allowed || spent.Remaining != 4 {
		t.Fatalf("AllowN: %+v %v", spent, err)
	}
	before := time.Now()
	res, err := l.Refund(ctx, "u", spent, 4)
	if err != nil || res.Remaining != 8 {
		t.Fatalf("Refund: %+v %v", res, err)
	}
	got, decisions := rec.take()
	key := mustKey(t, l, "u")
	if decisions != 1 || len(got) != 1 {
		t.Fatalf("%d decisions and %d refunds published, want 1 and 1", decisions, len(got))
	}
	r := got[0]
	if r.Namespace != "refunds" || r.Algorithm != TokenBucket || r.Key != key || r.Amount != 4 || r.Result != res ||
		r.Err != nil || r.ServerAddr != srv.Addr || r.Start.Before(before) || r.Duration <= 0 {
		t.Errorf("refund event %+v, want namespace refunds, key %s, amount 4, result %+v, timed", r, key, res)
	}
	if len(hooked) != 1 || hooked[0] != r {
		t.Errorf("Hooks.OnRefund got %+v", hooked)
	}
	if n := len(plain.all()); n != 1 {
		t.Errorf("a decisions-only subscriber got %d events, want the one decision", n)
	}
	if _, err := l.Refund(ctx, "u", spent, 11); !errors.Is(err, ErrInvalidCost) {
		t.Fatalf("refund above the burst: %v", err)
	}
	if got, _ := rec.take(); len(got) != 0 {
		t.Errorf("an invalid refund was published: %+v", got)
	}

	m := mustNewMulti(t, c, []Quota{{Name: "calls", Limit: PerMinute(5)}, {Name: "tokens", Limit: PerHour(1000), Algorithm: FixedWindow}},
		append(opts, WithNamespace("refunds-multi"))...)
	mspent, err := m.AllowCosts(ctx, "u", 1, 800)
	if err != nil || !mspent.Allowed {
		t.Fatalf("AllowCosts: %+v %v", mspent, err)
	}
	mres, err := m.Refund(ctx, "u", mspent, 0, 500)
	if err != nil || mres.Quotas[0].Remaining != 4 || mres.Quotas[1].Remaining != 700 {
		t.Fatalf("multi Refund: %+v %v", mres, err)
	}
	keys, err := m.Keys("u")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = rec.take()
	if len(got) != 1 {
		t.Fatalf("%d refund events for one quota given something back: %+v", len(got), got)
	}
	if r := got[0]; r.Namespace != "refunds-multi" || r.Algorithm != FixedWindow || r.Key != keys[1] || r.Amount != 500 || r.Result != mres.Quotas[1] || r.Err != nil {
		t.Errorf("multi refund event: %+v, want fixed_window, amount 500, result %+v", r, mres.Quotas[1])
	}

	srv.Stop()
	if _, err := l.Refund(ctx, "u", spent, 1); !errors.Is(err, ErrBackend) {
		t.Fatalf("Refund with Redis down: %v", err)
	}
	if _, err := m.Refund(ctx, "u", mspent, 1, 1); !errors.Is(err, ErrBackend) {
		t.Fatalf("multi Refund with Redis down: %v", err)
	}
	got, _ = rec.take()
	if len(got) != 3 {
		t.Fatalf("%d refund events with Redis down, want 3 (1 + 2 quotas)", len(got))
	}
	for _, r := range got {
		var be *BackendError
		if !errors.As(r.Err, &be) || r.Result != (Result{}) || r.Amount != 1 {
			t.Errorf("failed refund published as %+v", r)
		}
	}
}
