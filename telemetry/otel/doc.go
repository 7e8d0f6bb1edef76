// Package otel exports rate-limit decisions to OpenTelemetry: one span per
// decision, and metrics for pipelines that are OTLP only.
//
//	sub := rlotel.NewSubscriber() // the global TracerProvider and MeterProvider
//	limiter, err := ratelimit.New(rdb, limit, ratelimit.WithSubscribers(sub))
//
// The package is named otel after its directory; a program that also imports
// go.opentelemetry.io/otel names one of them, as here:
//
//	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
//
// # Spans
//
// Each decision becomes a span of kind Client named "ratelimit <namespace>",
// a child of the span in the caller's context, starting when the Redis call
// started and ending when it returned (Event.Start and
// Event.Start+Event.Duration). Its attributes:
//
//	ratelimit.namespace     the limiter's namespace
//	ratelimit.algorithm     "token_bucket"
//	ratelimit.decision      "allowed" or "blocked"
//	ratelimit.reason        "quota", "fail_open", "fail_closed", ...
//	ratelimit.cost          the cost asked for
//	ratelimit.remaining     tokens left (not when Redis failed: unknown then)
//	ratelimit.retry_after   seconds until the cost would fit (blocked, Redis up)
//	db.system.name          "redis"
//	db.stored_procedure.name the script: the algorithm's name
//	server.address, server.port  when the limiter's client has one address
//
// A block is not an error: the span status stays unset. When Redis failed,
// the status is Error with the error's message, error.type is the
// ratelimit.ErrorType ("timeout", "connection", "script", "canceled",
// "circuit_open", "other") and db.response.status_code the Redis error prefix when there is
// one; ratelimit.reason then says whether the call failed open or closed.
// The identity is never an attribute, nor is the Redis key.
//
// ratelimit.namespace, ratelimit.algorithm, ratelimit.decision,
// ratelimit.reason and db.system.name are given when the span starts, so a
// sampler can decide on them (e.g. keep every blocked or failed decision and
// a fraction of the rest); the others are set only on a recording span.
//
// A decision whose context holds no span gets no span (it is still counted
// in the metrics) unless WithRootSpans(true) is given: otherwise a limiter
// used outside traced requests would start a one-span trace per call.
// Whether a child span is recorded is the sampler's choice, as usual
// (ParentBased: recorded when the request's span is).
//
// With WithSpanEvents(true) a decision is instead an event named
// "ratelimit" on the caller's span, with the ratelimit.* attributes and
// error.type (and db.response.status_code) of a failure: much cheaper
// (no span, nothing for the span processor), at the cost of the decision's
// own duration in the trace view.
//
// The span is not put into the context other subscribers receive: an
// exemplar from the prom package points at the caller's span, the parent of
// this one, in the same trace.
//
// # Metrics
//
//	ratelimit.decisions         Int64ObservableCounter, {decision}: namespace, algorithm, decision, reason
//	ratelimit.cost              Int64ObservableCounter, {token}: the same attributes
//	ratelimit.backend.duration  Float64Histogram, s: namespace, algorithm,
//	                            db.system.name, and error.type when Redis failed
//	ratelimit.circuit.open      Int64Gauge, 1: namespace, algorithm
//	ratelimit.circuit.transitions Int64Counter, {transition}: namespace,
//	                            algorithm, ratelimit.circuit.state
//	ratelimit.cost.refunded     Int64Counter, {token}: namespace, algorithm
//
// The attribute keys are those of the spans. The circuit metrics follow a
// limiter's circuit breaker (ratelimit.WithBreaker): the Subscriber is a
// ratelimit.BreakerSubscriber, and also adds a "ratelimit.circuit" event to
// the span of the call that changed the breaker's state. A decision the open
// breaker made has error.type "circuit_open" and no duration measurement.
// Refunds (ratelimit's Refund; the Subscriber is a
// ratelimit.RefundSubscriber) are not decisions: they add what they gave
// back to ratelimit.cost.refunded and a "ratelimit.refund" event to the
// span of the call that made them. The histogram's advised bucket
// boundaries are sub-millisecond, like those of the prom package.
//
// The decision and cost counters are observable: the Subscriber counts with
// atomic adds and the MeterProvider reads the counts when it collects,
// because a synchronous counter's Add costs the SDK a pass over the
// attribute set on every call (a decision's metrics cost about 300 ns so,
// against about 730 ns with two synchronous counters: BenchmarkOnDecision,
// metrics-only). They export as any counter does: cumulative or delta sums,
// those of several Subscribers on one MeterProvider added up, and a
// Subscriber's counts kept by the MeterProvider after the Subscriber is
// dropped, so that a sum never goes back. That is also why each Subscriber
// holds a little memory (its series) for the MeterProvider's life: make one
// per program and subscribe it to every limiter, not one per limiter made
// at run time. A Subscriber counts from when it is made, also before
// otel.SetMeterProvider is called. The counters carry no exemplars; the
// duration histogram, synchronous, does.
//
// # Providers
//
// WithTracerProvider and WithMeterProvider choose the providers; by default
// the global ones are used (resolved when the subscriber is created, and
// following a later otel.SetTracerProvider as the global providers do). The
// instrumentation scope is named after this package's import path, ScopeName.
//
// # Cost
//
// Attribute sets and measurement options are computed once per namespace,
// algorithm, server and outcome. A decision without a span costs two
// atomic adds, one histogram measurement and no allocation. A sampled span
// costs what the SDK spends on a span (about 14 allocations, 3 KB, and with
// the batch span processor a hand-off to its goroutine per span, which
// dominates on a small machine); an event costs about 5 allocations and
// 1 KB. docs/telemetry.md has the numbers on real Redis.
package otel
