package otel

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestBreakerChange: a breaker's changes set the ratelimit.circuit.open
// gauge (1 open or half-open, 0 closed), count the transitions by state,
// and add a ratelimit.circuit event to the recording span of the call that
// caused them.
func TestBreakerChange(t *testing.T) {
	h := newHarness(t)
	var bus replay
	bus = append(bus, h.sub)
	ctx, span := h.tp.Tracer("test").Start(context.Background(), "request")
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	be := &ratelimit.BackendError{Type: ratelimit.ErrorTimeout, Err: context.DeadlineExceeded}
	for _, c := range []ratelimit.BreakerChange{
		{From: ratelimit.BreakerClosed, To: ratelimit.BreakerOpen, Err: be},
		{From: ratelimit.BreakerOpen, To: ratelimit.BreakerHalfOpen},
		{From: ratelimit.BreakerHalfOpen, To: ratelimit.BreakerOpen, Err: be},
		{From: ratelimit.BreakerOpen, To: ratelimit.BreakerHalfOpen},
		{From: ratelimit.BreakerHalfOpen, To: ratelimit.BreakerClosed},
	} {
		c.Namespace, c.Algorithm, c.At = "api", ratelimit.Concurrency, at
		bus.breaker(ctx, c)
	}
	span.End()

	ns, alg := NamespaceKey.String("api"), AlgorithmKey.String("concurrency")
	state := func(s string) attribute.Set { return attribute.NewSet(ns, alg, CircuitStateKey.String(s)) }
	got := h.metrics(t)
	want := map[string]metricdata.Aggregation{
		CircuitOpenMetric: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{
			{Attributes: attribute.NewSet(ns, alg), Value: 0},
		}},
		CircuitTransitionsMetric: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			DataPoints: []metricdata.DataPoint[int64]{
				{Attributes: state("open"), Value: 2},
				{Attributes: state("half_open"), Value: 2},
				{Attributes: state("closed"), Value: 1},
			}},
	}
	for _, m := range got.Metrics {
		if w, ok := want[m.Name]; ok {
			metricdatatest.AssertAggregationsEqual(t, w, m.Data, metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())
			delete(want, m.Name)
		}
	}
	if len(want) != 0 {
		t.Fatalf("metrics missing: %v", want)
	}

	spans := h.spans.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	events := spans[0].Events()
	if len(events) != 5 {
		t.Fatalf("%d events, want 5", len(events))
	}
	e := events[0]
	wantAttrs := attribute.NewSet(ns, alg, CircuitStateKey.String("open"), semconv.ErrorTypeKey.String("timeout"))
	if e.Name != CircuitEventName || !e.Time.Equal(at) || attribute.NewSet(e.Attributes...) != wantAttrs {
		t.Fatalf("event %+v", e)
	}
	closing := attribute.NewSet(events[4].Attributes...)
	if _, hasErr := closing.Value(semconv.ErrorTypeKey); hasErr {
		t.Fatalf("a closing carries error.type: %v", events[4].Attributes)
	}
}

// TestCircuitOpenSpan: a decision made while the circuit is open sent no
// script, so its span names no stored procedure; a timed-out call did.
func TestCircuitOpenSpan(t *testing.T) {
	h := newHarness(t)
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "request")
	for _, typ := range []ratelimit.ErrorType{ratelimit.ErrorCircuitOpen, ratelimit.ErrorTimeout} {
		h.sub.OnDecision(ctx, ratelimit.Event{
			Namespace: "api", Algorithm: ratelimit.TokenBucket, Cost: 1,
			Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonFailOpen},
			Err:    &ratelimit.BackendError{Type: typ, Err: context.DeadlineExceeded},
		})
	}
	parent.End()
	var checked int
	for _, s := range h.spans.Ended() {
		if s.Name() != "ratelimit api" {
			continue
		}
		set := attribute.NewSet(s.Attributes()...)
		_, hasOp := set.Value(semconv.DBStoredProcedureNameKey)
		errType, _ := set.Value(semconv.ErrorTypeKey)
		if want := errType.AsString() != "circuit_open"; hasOp != want {
			t.Errorf("span with error.type %q: db.stored_procedure.name present %v, want %v", errType.AsString(), hasOp, want)
		}
		checked++
	}
	if checked != 2 {
		t.Fatalf("%d decision spans, want 2", checked)
	}
}

// replay delivers breaker changes and refunds to subscribers as a limiter's
// bus does: to those that implement BreakerSubscriber or RefundSubscriber,
// in order.
type replay []ratelimit.Subscriber

func (r replay) breaker(ctx context.Context, c ratelimit.BreakerChange) {
	for _, s := range r {
		if b, ok := s.(ratelimit.BreakerSubscriber); ok {
			b.OnBreakerChange(ctx, c)
		}
	}
}

func (r replay) refund(ctx context.Context, e ratelimit.RefundEvent) {
	for _, s := range r {
		if b, ok := s.(ratelimit.RefundSubscriber); ok {
			b.OnRefundEvent(ctx, e)
		}
	}
}
