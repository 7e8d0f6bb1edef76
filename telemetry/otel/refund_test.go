package otel

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestRefundEvent: refunds add what they gave back to
// ratelimit.cost.refunded (a failed one adds nothing) and a
// ratelimit.refund event to the recording span of the call; they are not
// counted as decisions and get no span of their own.
func TestRefundEvent(t *testing.T) {
	h := newHarness(t)
	var bus replay
	bus = append(bus, h.sub)
	ctx, span := h.tp.Tracer("test").Start(context.Background(), "request")
	for _, r := range []ratelimit.RefundEvent{
		{Amount: 300, Result: ratelimit.Result{Allowed: true, Remaining: 900}},
		{Amount: 200, Result: ratelimit.Result{Allowed: true, Remaining: 1000}},
		{Amount: 50, Err: &ratelimit.BackendError{Type: ratelimit.ErrorConnection, Err: errors.New("refused")}},
	} {
		r.Namespace, r.Algorithm = "llm", ratelimit.TokenBucket
		bus.refund(ctx, r)
	}
	span.End()

	ns, alg := NamespaceKey.String("llm"), AlgorithmKey.String("token_bucket")
	var found bool
	for _, m := range h.metrics(t).Metrics {
		switch m.Name {
		case RefundedMetric:
			found = true
			metricdatatest.AssertAggregationsEqual(t, metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[int64]{{Attributes: attribute.NewSet(ns, alg), Value: 500}}},
				m.Data, metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())
		case DecisionsMetric, CostMetric:
			t.Errorf("a refund recorded %s: %+v", m.Name, m.Data)
		}
	}
	if !found {
		t.Fatalf("no %s metric", RefundedMetric)
	}

	spans := h.spans.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want only the caller's", len(spans))
	}
	events := spans[0].Events()
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	for i, want := range []attribute.Set{
		attribute.NewSet(ns, alg, CostKey.Int64(300), RemainingKey.Int64(900)),
		attribute.NewSet(ns, alg, CostKey.Int64(200), RemainingKey.Int64(1000)),
		attribute.NewSet(ns, alg, CostKey.Int64(50), semconv.ErrorTypeKey.String("connection")),
	} {
		if e := events[i]; e.Name != RefundEventName || attribute.NewSet(e.Attributes...) != want {
			t.Errorf("event %d: %s %v, want %s %v", i, e.Name, e.Attributes, RefundEventName, want.ToSlice())
		}
	}
}

// TestShadowSpanRetryAfter: the span of a decision shadow mode let through
// keeps the RetryAfter of the denial it stands for.
func TestShadowSpanRetryAfter(t *testing.T) {
	h := newHarness(t)
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "request")
	h.sub.OnDecision(ctx, ratelimit.Event{Namespace: "api", Algorithm: ratelimit.TokenBucket, Cost: 1,
		Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonShadow, RetryAfter: 1500 * time.Millisecond}})
	parent.End()
	for _, s := range h.spans.Ended() {
		if s.Name() != "ratelimit api" {
			continue
		}
		set := attribute.NewSet(s.Attributes()...)
		v, ok := set.Value(RetryAfterKey)
		if !ok || v.AsFloat64() != 1.5 {
			t.Fatalf("shadow span %s = %v (%v), want 1.5", RetryAfterKey, v.AsFloat64(), ok)
		}
		return
	}
	t.Fatal("no decision span")
}
