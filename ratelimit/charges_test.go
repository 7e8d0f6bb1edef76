package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

func mustNewCharger(t testing.TB, c redis.UniversalClient, opts ...Option) *Charger {
	t.Helper()
	ch, err := NewCharger(c, opts...)
	if err != nil {
		t.Fatalf("NewCharger: %v", err)
	}
	return ch
}

// TestChargerAllOrNothing: three identities with their own limits and
// algorithms in one call. When one of them does not fit, the call is denied
// and nothing is spent on the others (a Peek of each shows it), on
// miniredis and on a real redis-server.
func TestChargerAllOrNothing(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			rec := &recorder{}
			c := mustNewCharger(t, b.client, append(b.opts, WithNamespace("rls"), WithSubscribers(rec))...)
			ip := Charge{Identity: "ip=10.0.0.1", Limit: PerMinute(10), Algorithm: FixedWindow, Cost: 1, Name: "ip"}
			route := Charge{Identity: "route=/login", Limit: PerMinute(3).WithBurst(3), Cost: 1, Name: "route"}
			tenant := Charge{Identity: "tenant=acme", Limit: PerMinute(100), Algorithm: SlidingWindow, Cost: 1, Name: "tenant"}

			for i := range 3 {
				res, err := c.AllowAll(ctx, ip, route, tenant)
				if err != nil || !res.Allowed || len(res.Quotas) != 3 {
					t.Fatalf("call %d: %+v, %v", i, res, err)
				}
			}
			res, err := c.AllowAll(ctx, ip, route, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed || res.Quota != "route" || res.RetryAfter <= 0 {
				t.Fatalf("4th call: %+v, want denied by route", res.Result)
			}
			if !res.Quotas[0].Allowed || res.Quotas[1].Allowed || !res.Quotas[2].Allowed {
				t.Fatalf("4th call per charge: %+v", res.Quotas)
			}
			// Nothing was spent by the denied call: the others still show 3
			// spent, not 4.
			peek, err := c.PeekAll(ctx, ip, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if peek.Quotas[0].Remaining != 7 || peek.Quotas[1].Remaining != 97 {
				t.Fatalf("after the denial: ip %d left, tenant %d left; want 7 and 97 (nothing spent)",
					peek.Quotas[0].Remaining, peek.Quotas[1].Remaining)
			}
			// The state is a Limiter's: same namespace, algorithm, identity.
			l := mustNew(t, b.client, PerMinute(10), append(b.opts, WithNamespace("rls"), WithAlgorithm(FixedWindow))...)
			lr, err := l.Peek(ctx, "ip=10.0.0.1")
			if err != nil || lr.Remaining != 7 {
				t.Fatalf("Limiter.Peek of the same identity: %+v, %v; want 7 left", lr, err)
			}
			evs := rec.all()
			if len(evs) != 4 {
				t.Fatalf("%d events, want 4 (one per call; PeekAll publishes none)", len(evs))
			}
			if last := evs[3]; last.Result.Allowed || last.Result.Quota != "route" || last.Namespace != "rls" || last.Algorithm != TokenBucket {
				t.Fatalf("event of the denial: %+v", last)
			}

			// Time passes: the route's bucket refills one token.
			b.advance(20 * time.Second)
			res, err = c.AllowAll(ctx, ip, route, tenant)
			if err != nil || !res.Allowed {
				t.Fatalf("after 20s: %+v, %v", res, err)
			}
		})
	}
}

// TestChargerSameKey: two charges of one identity and algorithm are counted
// once with both costs (a script that loaded the key twice would write it
// twice and lose a spend), and two different limits on one key are bad
// input.
func TestChargerSameKey(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			c := mustNewCharger(t, b.client, b.opts...)
			a := Charge{Identity: "x", Limit: PerHour(10), Cost: 3}
			res, err := c.AllowAll(ctx, a, a)
			if err != nil || !res.Allowed {
				t.Fatalf("%+v, %v", res, err)
			}
			if res.Quotas[0].Remaining != 4 || res.Quotas[1].Remaining != 4 {
				t.Fatalf("remaining %d and %d, want 4 (10 - 3 - 3)", res.Quotas[0].Remaining, res.Quotas[1].Remaining)
			}
			other := a
			other.Limit = PerHour(20)
			if _, err := c.AllowAll(ctx, a, other); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("one key, two limits: %v, want ErrInvalidLimit", err)
			}
			big := a
			big.Cost = 6
			if _, err := c.AllowAll(ctx, big, big); !errors.Is(err, ErrInvalidCost) {
				t.Fatalf("one key, 12 > burst 10: %v, want ErrInvalidCost", err)
			}
		})
	}
}

// TestChargerRefund: RefundAll gives each charge's cost back, exactly
// once, and nothing for a call that spent nothing.
func TestChargerRefund(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			c := mustNewCharger(t, b.client, b.opts...)
			tokens := Charge{Identity: "k", Limit: PerHour(1000), Algorithm: FixedWindow, Cost: 800}
			reqs := Charge{Identity: "k", Limit: PerHour(10), Cost: 1}
			res, err := c.AllowAll(ctx, reqs, tokens)
			if err != nil || !res.Allowed {
				t.Fatal(res, err)
			}
			back := tokens
			back.Cost = 500
			none := reqs
			none.Cost = 0
			rr, err := c.RefundAll(ctx, res, none, back)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Quotas[1].Remaining != 700 || rr.Quotas[0].Remaining != 9 {
				t.Fatalf("after the refund: %+v", rr.Quotas)
			}
			denied, err := c.AllowAll(ctx, reqs, Charge{Identity: "k", Limit: PerHour(1000), Algorithm: FixedWindow, Cost: 701})
			if err != nil || denied.Allowed {
				t.Fatal(denied, err)
			}
			zero, err := c.RefundAll(ctx, denied, none, back)
			if err != nil || zero.Quotas != nil {
				t.Fatalf("refund of a denial: %+v, %v; want a zero MultiResult", zero, err)
			}
			if _, err := c.RefundAll(ctx, res, none, Charge{Identity: "k", Limit: PerHour(1000), Algorithm: FixedWindow, Cost: 1001}); !errors.Is(err, ErrInvalidCost) {
				t.Fatalf("refund above the burst: %v", err)
			}
			if err := c.Reset(ctx, reqs, tokens); err != nil {
				t.Fatal(err)
			}
			if p, _ := c.PeekAll(ctx, reqs, tokens); p.Quotas[0].Remaining != 10 || p.Quotas[1].Remaining != 1000 {
				t.Fatalf("after Reset: %+v", p.Quotas)
			}
		})
	}
}

// TestChargerBadInput: every bad call fails before anything is decided,
// with an error wrapping its sentinel and prefixed "ratelimit:".
func TestChargerBadInput(t *testing.T) {
	b := miniBackend(t)
	rec := &recorder{}
	c := mustNewCharger(t, b.client, append(b.opts, WithSubscribers(rec))...)
	ctx := context.Background()
	ok := Charge{Identity: "a", Limit: PerSecond(5), Cost: 1}
	many := make([]Charge, MaxCharges+1)
	for i := range many {
		many[i] = ok
		many[i].Identity = strconv.Itoa(i)
	}
	with := func(f func(*Charge)) Charge { ch := ok; f(&ch); return ch }
	checkBadInput(t, b.client, rec, []badCase{
		{"no charge", func() error { _, err := c.AllowAll(ctx); return err }, ErrInvalidCost},
		{"too many", func() error { _, err := c.AllowAll(ctx, many...); return err }, ErrInvalidCost},
		{"empty identity", func() error { _, err := c.AllowAll(ctx, with(func(c *Charge) { c.Identity = "" })); return err }, ErrInvalidIdentity},
		{"zero limit", func() error { _, err := c.AllowAll(ctx, with(func(c *Charge) { c.Limit = Limit{} })); return err }, ErrInvalidLimit},
		{"burst on a window", func() error {
			_, err := c.AllowAll(ctx, with(func(c *Charge) { c.Algorithm, c.Limit = FixedWindow, PerSecond(5).WithBurst(9) }))
			return err
		}, ErrInvalidLimit},
		{"sliding log", func() error {
			_, err := c.AllowAll(ctx, with(func(c *Charge) { c.Algorithm = SlidingLog }))
			return err
		}, ErrInvalidLimit},
		{"negative cost", func() error { _, err := c.AllowAll(ctx, with(func(c *Charge) { c.Cost = -1 })); return err }, ErrInvalidCost},
		{"cost above burst", func() error { _, err := c.AllowAll(ctx, with(func(c *Charge) { c.Cost = 6 })); return err }, ErrInvalidCost},
		{"bad name", func() error { _, err := c.AllowAll(ctx, with(func(c *Charge) { c.Name = "a b" })); return err }, ErrInvalidLimit},
		{"peek, too many", func() error { _, err := c.PeekAll(ctx, many...); return err }, ErrInvalidCost},
		{"refund, bad cost", func() error {
			_, err := c.RefundAll(ctx, MultiResult{Result: spentNow()}, with(func(c *Charge) { c.Cost = 7 }))
			return err
		}, ErrInvalidCost},
		{"tag, empty", func() error { _, err := c.Tagged(""); return err }, ErrInvalidIdentity},
	})
	if _, err := NewCharger(b.client, WithAlgorithm(FixedWindow)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("WithAlgorithm: %v", err)
	}
	if _, err := NewCharger(nil); !errors.Is(err, ErrNilClient) {
		t.Fatalf("nil client: %v", err)
	}
	if _, err := NewChargerMode(b.client, SlotMode(9)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("bad slot mode: %v", err)
	}
}

// TestChargerFailStrategy: with Redis gone, the fail strategy decides the
// whole call, and the error is a *BackendError.
func TestChargerFailStrategy(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	srv.Stop()
	ctx := context.Background()
	charges := []Charge{{Identity: "a", Limit: PerSecond(1), Cost: 1, Name: "a"}, {Identity: "b", Limit: PerSecond(1), Cost: 1, Name: "b"}}
	for _, fs := range []FailStrategy{FailOpen, FailClosed} {
		c := mustNewCharger(t, client, WithFailStrategy(fs), WithTimeout(200*time.Millisecond))
		res, err := c.AllowAll(ctx, charges...)
		if !errors.Is(err, ErrBackend) {
			t.Fatalf("%v: err %v, want ErrBackend", fs, err)
		}
		if res.Allowed != (fs == FailOpen) || len(res.Quotas) != 2 || res.Quotas[1].Quota != "b" {
			t.Fatalf("%v: %+v", fs, res)
		}
	}
}

// TestChargerCluster runs the Charger on a real 3-master Redis Cluster.
// Charges of different identities lie in different slots:
//   - SlotsPerGroup decides them slot by slot, and when a later slot
//     denies, the slots already spent are given back: the call spends
//     nothing anywhere (the test checks every key afterwards);
//   - a Tagged view puts one call's keys in one slot (one script);
//   - SlotsStrict refuses a cross-slot call with ErrCrossSlot.
func TestChargerCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	ctx := context.Background()
	opts := []Option{WithTimeout(5 * time.Second), WithNamespace("env")}

	// Identities in distinct slots, the denying one in the last slot so
	// that the groups before it are spent first.
	c := mustNewCharger(t, cc, opts...)
	var charges []Charge
	slots := map[int]bool{}
	for i := 0; len(charges) < 3; i++ {
		ch := Charge{Identity: "id" + strconv.Itoa(i), Limit: PerHour(5), Algorithm: FixedWindow, Cost: 1, Name: "d" + strconv.Itoa(i)}
		keys, _ := c.Keys(ch)
		s := keySlot(keys[0])
		if want, err := cluster.Slot(ctx, keys[0]); err != nil || int64(s) != want {
			t.Fatalf("keySlot(%s) = %d, CLUSTER KEYSLOT says %d (%v)", keys[0], s, want, err)
		}
		if !slots[s] {
			slots[s] = true
			charges = append(charges, ch)
		}
	}
	// The charge in the highest slot runs last: use it up first.
	last := 0
	for i, ch := range charges {
		k, _ := c.Keys(ch)
		l0, _ := c.Keys(charges[last])
		if keySlot(k[0]) > keySlot(l0[0]) {
			last = i
		}
	}
	full := charges[last]
	full.Cost = 5
	if res, err := c.AllowAll(ctx, full); err != nil || !res.Allowed {
		t.Fatal(res, err)
	}
	rec := &refundRecorder{}
	c2 := mustNewCharger(t, cc, append(opts, WithSubscribers(rec))...)
	res, err := c2.AllowAll(ctx, charges...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed || res.Quota != charges[last].Name {
		t.Fatalf("cross-slot call: %+v, want denied by %s", res.Result, charges[last].Name)
	}
	peek, err := c.PeekAll(ctx, charges...)
	if err != nil {
		t.Fatal(err)
	}
	for i, q := range peek.Quotas {
		want := int64(5)
		if i == last {
			want = 0
		}
		if q.Remaining != want {
			t.Fatalf("after the denied call, charge %d has %d left, want %d: the earlier slots were not given back", i, q.Remaining, want)
		}
	}
	if n := rec.refunds(); n != 2 {
		t.Fatalf("%d compensating refunds published, want 2 (one per spent charge)", n)
	}
	// Allowed across slots: every charge spent once.
	if err := c.Reset(ctx, charges...); err != nil {
		t.Fatal(err)
	}
	if res, err := c.AllowAll(ctx, charges...); err != nil || !res.Allowed {
		t.Fatal(res, err)
	}

	// A Tagged view: one slot for the whole call.
	tv, err := c.Tagged("edge_proxy")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := tv.Keys(charges...)
	first, _ := cluster.Slot(ctx, keys[0])
	for _, k := range keys {
		if s, _ := cluster.Slot(ctx, k); s != first || !strings.Contains(k, "}:") {
			t.Fatalf("tagged key %s in slot %d, want %d", k, s, first)
		}
	}
	for i := range 5 {
		if res, err := tv.AllowAll(ctx, charges...); err != nil || !res.Allowed {
			t.Fatalf("tagged call %d: %+v, %v", i, res, err)
		}
	}
	if res, err := tv.AllowAll(ctx, charges...); err != nil || res.Allowed {
		t.Fatalf("tagged call 6: %+v, %v, want denied", res, err)
	}

	strict, err := NewChargerMode(cc, SlotsStrict, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.AllowAll(ctx, charges...); !errors.Is(err, ErrCrossSlot) || !strings.HasPrefix(err.Error(), "ratelimit:") {
		t.Fatalf("strict, cross-slot: %v, want ErrCrossSlot", err)
	}
	st, _ := strict.Tagged("t")
	if res, err := st.AllowAll(ctx, charges...); err != nil || !res.Allowed {
		t.Fatalf("strict, tagged: %+v, %v", res, err)
	}
}

// refundRecorder counts RefundEvents.
type refundRecorder struct {
	recorder
	n []RefundEvent
}

func (r *refundRecorder) OnRefundEvent(_ context.Context, e RefundEvent) {
	r.mu.Lock()
	r.n = append(r.n, e)
	r.mu.Unlock()
}

func (r *refundRecorder) refunds() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.n)
}

// TestKeySlot checks keySlot against the examples of the Cluster
// specification.
func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":          12739, // CRC16 XMODEM check value 0x31C3 % 16384
		"{user1000}.follows": keySlot("user1000"),
		"foo{}{bar}":         keySlot("foo{}{bar}"),
		"foo{bar}{zap}":      keySlot("bar"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if fmt.Sprint(keySlot("")) != "0" {
		t.Errorf("empty key")
	}
}
