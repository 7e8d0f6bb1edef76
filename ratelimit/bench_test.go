package ratelimit

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// BenchmarkAllow measures one decision on a real redis-server: a round trip
// on loopback plus the script. Keys rotate over 1000 identities.
func BenchmarkAllow(b *testing.B) {
	srv := redistestStartB(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	ctx := context.Background()
	run := func(b *testing.B, l *Limiter) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("serial", func(b *testing.B) { run(b, mustNew(b, c, PerSecond(1e6))) })
	b.Run("serial-hmac", func(b *testing.B) {
		run(b, mustNew(b, c, PerSecond(1e6), WithIdentityKey([]byte("0123456789abcdef"))))
	})
	b.Run("parallel", func(b *testing.B) {
		l := mustNew(b, c, PerSecond(1e6))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	})
}

// BenchmarkRefund measures a Refund on a real redis-server, without
// subscribers and with one RefundSubscriber (the publish and its timing).
// Keys rotate over 1000 identities.
func BenchmarkRefund(b *testing.B) {
	srv := redistestStartB(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	var refunded atomic.Int64
	counter := Hooks{OnRefund: func(_ context.Context, r RefundEvent) { refunded.Add(r.Amount) }}
	for _, bc := range []struct {
		name string
		opts []Option
	}{{"no-subscriber", nil}, {"subscriber", []Option{WithSubscribers(counter)}}} {
		b.Run(bc.name, func(b *testing.B) {
			l := mustNew(b, c, PerSecond(1e6), bc.opts...)
			spent := spentNow()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := l.Refund(ctx, "user:"+strconv.Itoa(i%1000), spent, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	if refunded.Load() == 0 {
		b.Fatal("the subscriber saw no refund")
	}
}

// BenchmarkKey measures hashing an identity into its Redis key.
func BenchmarkKey(b *testing.B) {
	for _, secret := range [][]byte{nil, []byte("0123456789abcdef")} {
		name := "sha256"
		if secret != nil {
			name = "hmac"
		}
		b.Run(name, func(b *testing.B) {
			k := newKeyer("ns:token_bucket:", secret)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.key("user:alice@example.com"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBusPublish measures fanning one Event out to 0, 1 and 3 cheap
// subscribers.
func BenchmarkBusPublish(b *testing.B) {
	ev := Event{Namespace: "ns", Key: "ns:token_bucket:{x}", Cost: 1, Result: Result{Allowed: true}}
	ctx := context.Background()
	for _, n := range []int{0, 1, 3} {
		b.Run(strconv.Itoa(n)+"-subscribers", func(b *testing.B) {
			var bus Bus
			var sink int64
			for range n {
				bus.Subscribe(SubscriberFunc(func(_ context.Context, e Event) { sink += e.Cost }))
			}
			b.ReportAllocs()
			for b.Loop() {
				bus.publish(ctx, ev)
			}
			_ = sink
		})
	}
}

// BenchmarkAllowConcurrent measures Allow from 1, 16 and 64 goroutines on
// one limiter over 10,000 identities on a real redis-server, with each way of
// sending calls: off (one script call per decision) and the dispatcher (the
// default). ns/op is wall time per decision, so 1/ns-op is decisions/s.
func BenchmarkAllowConcurrent(b *testing.B) {
	srv := redistestStartB(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, PoolSize: 300})
	b.Cleanup(func() { _ = c.Close() })
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	ctx := context.Background()
	modes := []struct {
		name string
		new  func(b *testing.B) *Limiter
	}{
		{"off", func(b *testing.B) *Limiter { return mustNew(b, c, PerSecond(1e6), WithPipelining(false)) }},
		{"dispatcher", func(b *testing.B) *Limiter { return mustNew(b, c, PerSecond(1e6)) }},
	}
	for _, conc := range []int{1, 16, 64} {
		for _, m := range modes {
			b.Run(fmt.Sprintf("conc=%d/%s", conc, m.name), func(b *testing.B) {
				l := m.new(b)
				var next atomic.Int64
				b.ReportAllocs()
				b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				if conc == 1 {
					for i := 0; b.Loop(); i++ {
						if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1)) * 7919
					for pb.Next() {
						if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
							b.Fatal(err)
						}
						i++
					}
				})
			})
		}
	}
}

// BenchmarkBatchAllow measures BatchAllow on batches of 1, 10 and 100
// requests on a real redis-server; ns/op and allocs/op are per batch.
func BenchmarkBatchAllow(b *testing.B) {
	srv := redistestStartB(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	l := mustNew(b, c, PerSecond(1e6))
	ctx := context.Background()
	for _, n := range []int{1, 10, 100} {
		reqs := make([]Request, n)
		for i := range reqs {
			reqs[i] = Request{Identity: "user:" + strconv.Itoa(i), Cost: 1}
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.BatchAllow(ctx, reqs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
