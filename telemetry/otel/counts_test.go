package otel

import (
	"context"
	"runtime"
	"slices"
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

// TestDroppedSubscriberKeepsItsCounts: a Subscriber dropped with its
// limiter (a reload: a new limiter and Subscriber replace them) leaves its
// counts with the MeterProvider, so that a cumulative sum never goes back
// and no delta is negative, as with a synchronous counter. Found by review:
// a version that unregistered the callback of a collected Subscriber read
// 100, 5, 6 here, and -95 as a delta.
func TestDroppedSubscriberKeepsItsCounts(t *testing.T) {
	for _, temp := range []metricdata.Temporality{metricdata.CumulativeTemporality, metricdata.DeltaTemporality} {
		t.Run(temp.String(), func(t *testing.T) {
			reader := sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(func(sdkmetric.InstrumentKind) metricdata.Temporality {
				return temp
			}))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer mp.Shutdown(context.Background())
			ev := ratelimit.Event{Namespace: "api", Cost: 1, Result: ratelimit.Result{Allowed: true}}
			func() {
				old := NewSubscriber(WithMeterProvider(mp))
				for range 100 {
					old.OnDecision(context.Background(), ev)
				}
			}()
			var seen []int64
			d, _, _ := decisionCounts(t, reader)
			seen = append(seen, d["api"])
			// The old Subscriber is unreachable: let the collector take it,
			// and run any cleanup it would trigger, before each collection.
			next := NewSubscriber(WithMeterProvider(mp))
			for _, n := range []int{5, 1} {
				for range 20 {
					runtime.GC()
					runtime.Gosched()
				}
				for range n {
					next.OnDecision(context.Background(), ev)
				}
				d, _, _ := decisionCounts(t, reader)
				seen = append(seen, d["api"])
			}
			want := []int64{100, 105, 106}
			if temp == metricdata.DeltaTemporality {
				want = []int64{100, 5, 1}
			}
			if !slices.Equal(seen, want) {
				t.Fatalf("decisions at three collections %v, want %v", seen, want)
			}
			runtime.KeepAlive(next)
		})
	}
}
