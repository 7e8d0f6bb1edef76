package prom

import (
	"context"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// BenchmarkOnDecision measures one event through the collector, without a
// span in the context (the 0-allocation path) and with a sampled one (an
// exemplar per observation).
func BenchmarkOnDecision(b *testing.B) {
	ev := ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true, Remaining: 9},
		Start: time.Unix(1, 0), Duration: 40 * time.Microsecond}
	for _, bc := range []struct {
		name string
		ctx  context.Context
	}{
		{"no-span", context.Background()},
		{"sampled-span", sampledCtx(traceHex, spanHex)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := mustCollector(b)
			m.OnDecision(bc.ctx, ev)
			b.ReportAllocs()
			for b.Loop() {
				m.OnDecision(bc.ctx, ev)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		m := mustCollector(b)
		ctx := context.Background()
		m.OnDecision(ctx, ev)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.OnDecision(ctx, ev)
			}
		})
	})
}
