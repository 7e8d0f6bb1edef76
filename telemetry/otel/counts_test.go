package otel

import (
	"context"
	"runtime"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// The decision and cost counters are observable: counted by the Subscriber
// and observed at collection. These tests hold what a synchronous counter
// gave for free.

// decisionCounts collects reader and returns the decisions and cost sums by
// namespace, and the decisions metric's temporality.
func decisionCounts(t *testing.T, reader sdkmetric.Reader) (decisions, cost map[string]int64, temp metricdata.Temporality) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	decisions, cost = map[string]int64{}, map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var into map[string]int64
			switch m.Name {
			case DecisionsMetric:
				into = decisions
			case CostMetric:
				into = cost
			default:
				continue
			}
			sum := m.Data.(metricdata.Sum[int64])
			if !sum.IsMonotonic {
				t.Errorf("%s is not monotonic", m.Name)
			}
			if m.Name == DecisionsMetric {
				temp = sum.Temporality
			}
			for _, dp := range sum.DataPoints {
				ns, _ := dp.Attributes.Value(NamespaceKey)
				into[ns.AsString()] += dp.Value
			}
		}
	}
	return decisions, cost, temp
}

// TestCountsOfTwoSubscribersAdd: two Subscribers on one MeterProvider (one
// per limiter, say) report the sum of their counts for the same series, as
// two callers of one synchronous counter did.
func TestCountsOfTwoSubscribersAdd(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	a, b := NewSubscriber(WithMeterProvider(mp)), NewSubscriber(WithMeterProvider(mp))
	ev := ratelimit.Event{Namespace: "api", Cost: 3, Result: ratelimit.Result{Allowed: true}}
	for range 2 {
		a.OnDecision(context.Background(), ev)
	}
	b.OnDecision(context.Background(), ev)
	b.OnDecision(context.Background(), ratelimit.Event{Namespace: "api", Cost: 0, Result: ratelimit.Result{Allowed: true}})
	decisions, cost, _ := decisionCounts(t, reader)
	if decisions["api"] != 4 || cost["api"] != 9 {
		t.Fatalf("decisions %v cost %v, want 4 and 9", decisions, cost)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
}

// TestCountsOfTwoServersAdd: the metric attributes leave the server out, so
// one namespace on two Redis servers (two series of one Subscriber) is one
// sum, as with a synchronous counter.
func TestCountsOfTwoServersAdd(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	s := NewSubscriber(WithMeterProvider(mp))
	for i, addr := range []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.2:6379"} {
		s.OnDecision(context.Background(), ratelimit.Event{Namespace: "api", Cost: int64(i + 1), ServerAddr: addr,
			Result: ratelimit.Result{Allowed: true}})
	}
	decisions, cost, _ := decisionCounts(t, reader)
	if decisions["api"] != 3 || cost["api"] != 6 {
		t.Fatalf("decisions %v cost %v, want 3 and 6", decisions, cost)
	}
	runtime.KeepAlive(s)
}

// TestCountsDeltaTemporality: with a reader that asks for deltas, each
// collection reports what was counted since the previous one.
func TestCountsDeltaTemporality(t *testing.T) {
	reader := sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(func(sdkmetric.InstrumentKind) metricdata.Temporality {
		return metricdata.DeltaTemporality
	}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	s := NewSubscriber(WithMeterProvider(mp))
	ev := ratelimit.Event{Namespace: "api", Cost: 2, Result: ratelimit.Result{Allowed: false}}
	for i, n := range []int64{3, 1} {
		for range n {
			s.OnDecision(context.Background(), ev)
		}
		decisions, cost, temp := decisionCounts(t, reader)
		if temp != metricdata.DeltaTemporality {
			t.Fatalf("temporality %v, want delta", temp)
		}
		if decisions["api"] != n || cost["api"] != 2*n {
			t.Fatalf("collection %d: decisions %v cost %v, want %d and %d", i+1, decisions, cost, n, 2*n)
		}
	}
	runtime.KeepAlive(s)
}

// TestUnreachableSubscriberUnregisters: a Subscriber no limiter holds any
// more is collected, and its callback leaves the MeterProvider with it, so
// that a program making subscribers (tests do) does not keep every one.
func TestUnreachableSubscriberUnregisters(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	kept := NewSubscriber(WithMeterProvider(mp))
	kept.OnDecision(context.Background(), ratelimit.Event{Namespace: "kept", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	func() {
		dropped := NewSubscriber(WithMeterProvider(mp))
		dropped.OnDecision(context.Background(), ratelimit.Event{Namespace: "dropped", Cost: 1, Result: ratelimit.Result{Allowed: true}})
	}()
	if decisions, _, _ := decisionCounts(t, reader); decisions["dropped"] != 1 || decisions["kept"] != 1 {
		t.Fatalf("before GC: decisions %v, want 1 each", decisions)
	}
	// Cleanups run on their own goroutine after a GC; each round gives
	// them the chance. Bounded: the test fails if it never happens.
	for i := 0; ; i++ {
		runtime.GC()
		runtime.Gosched()
		decisions, _, _ := decisionCounts(t, reader)
		if _, ok := decisions["dropped"]; !ok {
			if decisions["kept"] != 1 {
				t.Fatalf("after the drop: decisions %v, want kept 1", decisions)
			}
			break
		}
		if i == 1000 {
			t.Fatal("the dropped Subscriber's counts are still reported after 1000 GCs")
		}
	}
	runtime.KeepAlive(kept)
}
