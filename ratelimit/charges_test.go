package ratelimit

import (
	"context"
	"errors"
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
	many := make([]Charge, MaxQuotas+1)
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
	// WithStrictSlots is the Charger's alone.
	if _, err := New(b.client, PerSecond(1), WithStrictSlots()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("New with WithStrictSlots: %v", err)
	}
	if _, err := NewMulti(b.client, []Quota{{Name: "q", Limit: PerSecond(1)}}, WithStrictSlots()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewMulti with WithStrictSlots: %v", err)
	}
	if _, err := NewConcurrency(b.client, 1, WithStrictSlots()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewConcurrency with WithStrictSlots: %v", err)
	}
	if _, err := NewCharger(b.client, WithStrictSlots(), WithLeaseTTL(time.Second)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewCharger with WithLeaseTTL: %v", err)
	}
	// Off a Cluster, a strict Charger takes calls of several identities.
	strict := mustNewCharger(t, b.client, append(b.opts, WithStrictSlots())...)
	if res, err := strict.AllowAll(ctx, ok, with(func(c *Charge) { c.Identity = "b" })); err != nil || !res.Allowed {
		t.Fatalf("strict on a single Redis: %+v, %v", res, err)
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
		want := ReasonFailOpen
		if fs == FailClosed {
			want = ReasonFailClosed
		}
		if res.Allowed != (fs == FailOpen) || res.Reason != want || len(res.Quotas) != 2 ||
			res.Quotas[1].Reason != want || res.Quotas[1].Limit != charges[1].Limit {
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
	slots := map[uint16]bool{}
	for i := 0; len(charges) < 3; i++ {
		ch := Charge{Identity: "id" + strconv.Itoa(i), Limit: PerHour(5), Algorithm: FixedWindow, Cost: 1, Name: "d" + strconv.Itoa(i)}
		key, _ := c.key(ch)
		s := slotOf(key)
		if want, err := cluster.Slot(ctx, key); err != nil || int64(s) != want {
			t.Fatalf("slotOf(%s) = %d, CLUSTER KEYSLOT says %d (%v)", key, s, want, err)
		}
		if !slots[s] {
			slots[s] = true
			charges = append(charges, ch)
		}
	}
	// The charge in the highest slot runs last: use it up first.
	last := 0
	for i, ch := range charges {
		k, _ := c.key(ch)
		l0, _ := c.key(charges[last])
		if slotOf(k) > slotOf(l0) {
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
	var keys []string
	for _, ch := range charges {
		k, _ := tv.key(ch)
		keys = append(keys, k)
	}
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

	strict := mustNewCharger(t, cc, append(opts, WithStrictSlots())...)
	if _, err := strict.AllowAll(ctx, charges...); !errors.Is(err, ErrCrossSlot) || !strings.HasPrefix(err.Error(), "ratelimit:") {
		t.Fatalf("strict, cross-slot: %v, want ErrCrossSlot", err)
	}
	st, _ := strict.Tagged("t")
	if res, err := st.AllowAll(ctx, charges...); err != nil || !res.Allowed {
		t.Fatalf("strict, tagged: %+v, %v", res, err)
	}
}

// TestChargerRing runs the Charger on a Ring of two real redis-servers. The
// Ring sends a script to the shard of its first key's hash tag, so charges
// of identities on different shards are decided one identity at a time,
// each on its own shard, where a Limiter of the same namespace and
// algorithm finds its state; when the second denies, the first is given
// back. WithStrictSlots refuses such a call.
func TestChargerRing(t *testing.T) {
	s1, s2 := redistest.Start(t), redistest.Start(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": s1.Addr, "b": s2.Addr}, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = ring.Close() })
	direct := []*redis.Client{s1.Client(t), s2.Client(t)}
	ctx := context.Background()
	opts := []Option{WithTimeout(5 * time.Second), WithNamespace("ring")}
	c := mustNewCharger(t, ring, opts...)
	lim := mustNew(t, ring, PerHour(5), opts...)

	// shard returns the index of the server holding key.
	shard := func(key string) int {
		t.Helper()
		for i, d := range direct {
			if n, err := d.Exists(ctx, key).Result(); err != nil {
				t.Fatal(err)
			} else if n == 1 {
				return i
			}
		}
		t.Fatalf("key %s on no shard", key)
		return -1
	}
	// Two identities on different shards, found by where the Limiter
	// puts them.
	var ids [2]string
	found := [2]bool{}
	for i := 0; !found[0] || !found[1]; i++ {
		id := "id" + strconv.Itoa(i)
		if _, err := lim.Allow(ctx, id); err != nil {
			t.Fatal(err)
		}
		key, _ := lim.Key(id)
		if s := shard(key); !found[s] {
			ids[s], found[s] = id, true
		}
	}
	for _, d := range direct {
		if err := d.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	a := Charge{Identity: ids[0], Limit: PerHour(5), Cost: 1, Name: "a"}
	b := Charge{Identity: ids[1], Limit: PerHour(5), Cost: 1, Name: "b"}
	// The second charge's shard first: a single script would run there
	// and write the first charge's key on the wrong shard.
	if res, err := c.AllowAll(ctx, b, a); err != nil || !res.Allowed {
		t.Fatal(res, err)
	}
	for i, ch := range []Charge{a, b} {
		key, _ := c.key(ch)
		if s := shard(key); s != i {
			t.Fatalf("charge %s on shard %d, want %d (its hash tag's)", ch.Name, s, i)
		}
		if r, err := lim.Peek(ctx, ch.Identity); err != nil || r.Remaining != 4 {
			t.Fatalf("Limiter.Peek(%s): %+v, %v; want 4 left", ch.Name, r, err)
		}
	}
	// b used up: the call is denied and a is given back.
	full := b
	full.Cost = 4
	if res, err := c.AllowAll(ctx, full); err != nil || !res.Allowed {
		t.Fatal(res, err)
	}
	if res, err := c.AllowAll(ctx, a, b); err != nil || res.Allowed || res.Quota != "b" {
		t.Fatalf("%+v, %v; want denied by b", res.Result, err)
	}
	if r, err := lim.Peek(ctx, a.Identity); err != nil || r.Remaining != 4 {
		t.Fatalf("a after the denied call: %+v, %v; want 4 left (given back)", r, err)
	}

	strict := mustNewCharger(t, ring, append(opts, WithStrictSlots())...)
	if _, err := strict.AllowAll(ctx, a, b); !errors.Is(err, ErrCrossSlot) {
		t.Fatalf("strict on a Ring: %v, want ErrCrossSlot", err)
	}
	tv, err := strict.Tagged("t")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := tv.AllowAll(ctx, a, b); err != nil || !res.Allowed {
		t.Fatalf("strict, tagged, on a Ring: %+v, %v", res, err)
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

// TestSlotOf checks slotOf against the examples of the Cluster
// specification.
func TestSlotOf(t *testing.T) {
	for key, want := range map[string]uint16{
		"123456789":          12739, // CRC16 XMODEM check value 0x31C3 % 16384
		"{user1000}.follows": slotOf("user1000"),
		"foo{}{bar}":         slotOf("foo{}{bar}"),
		"foo{bar}{zap}":      slotOf("bar"),
		"":                   0,
	} {
		if got := slotOf(key); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", key, got, want)
		}
	}
}
