package otel

import (
	"context"
	"errors"
	"net"
	"runtime/debug"
	"strconv"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/telemetrykit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// ScopeName is the instrumentation scope of the tracer and the meter: this
// package's import path.
const ScopeName = "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"

// Attribute keys of the spans and metrics.
const (
	// NamespaceKey is the limiter's namespace.
	NamespaceKey = attribute.Key("ratelimit.namespace")
	// AlgorithmKey is the limiter's algorithm ("token_bucket").
	AlgorithmKey = attribute.Key("ratelimit.algorithm")
	// DecisionKey is Allowed or Blocked.
	DecisionKey = attribute.Key("ratelimit.decision")
	// ReasonKey is the ratelimit.Reason: "quota", "shadow", "fail_open",
	// "fail_closed", and any added later.
	ReasonKey = attribute.Key("ratelimit.reason")
	// CostKey is the cost asked for (spans and events only).
	CostKey = attribute.Key("ratelimit.cost")
	// RemainingKey is the cost that could still be spent at once (spans
	// and events only; absent when Redis failed).
	RemainingKey = attribute.Key("ratelimit.remaining")
	// RetryAfterKey is, for a block by Redis (or a shadow-mode pass the
	// limit would have blocked), the seconds until the cost would fit, as a
	// float (spans and events only).
	RetryAfterKey = attribute.Key("ratelimit.retry_after")
	// CircuitStateKey is the state a circuit breaker changed to:
	// "closed", "open" or "half_open" (see ratelimit.WithBreaker).
	CircuitStateKey = attribute.Key("ratelimit.circuit.state")
	// ShardKey is the shard that decided, for a limiter with
	// ratelimit.WithShards (a span attribute, never a metric's).
	ShardKey = attribute.Key("ratelimit.shard")
)

// Values of DecisionKey.
const (
	// Allowed is the decision of a call that was let through.
	Allowed = "allowed"
	// Blocked is the decision of a call that was denied.
	Blocked = "blocked"
)

// Metric names. Like the attribute keys, they are part of the package's
// API and do not change.
const (
	// DecisionsMetric counts decisions ({decision}), with the namespace,
	// algorithm, decision and reason attributes.
	DecisionsMetric = "ratelimit.decisions"
	// CostMetric counts cost units asked for ({token}), with the
	// attributes of DecisionsMetric.
	CostMetric = "ratelimit.cost"
	// DurationMetric is the histogram of Redis round trips in seconds,
	// with namespace, algorithm, db.system.name and, on failure,
	// error.type.
	DurationMetric = "ratelimit.backend.duration"
	// CircuitOpenMetric is a gauge per namespace and algorithm: 1 while
	// the limiter's circuit breaker skips Redis (open or half-open), 0
	// when it is closed.
	CircuitOpenMetric = "ratelimit.circuit.open"
	// CircuitTransitionsMetric counts circuit breaker state changes
	// ({transition}), with namespace, algorithm and CircuitStateKey (the
	// state changed to).
	CircuitTransitionsMetric = "ratelimit.circuit.transitions"
	// CircuitEventName is the name of the span event a breaker change adds
	// to the span in the context of the call that caused it.
	CircuitEventName = "ratelimit.circuit"
	// RefundedMetric is the counter of cost units given back by
	// ratelimit's Refund, with namespace and algorithm; refunds Redis
	// failed are not in it.
	RefundedMetric = "ratelimit.cost.refunded"
	// RefundEventName is the name of the span event a refund adds to the
	// span of the call that made it.
	RefundEventName = "ratelimit.refund"
)

// An Option configures NewSubscriber.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	roots  bool
	events bool
}

// WithTracerProvider sets the TracerProvider spans are created with
// (default: the global one, otel.GetTracerProvider). A nil tp is ignored.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithMeterProvider sets the MeterProvider metrics are recorded with
// (default: the global one, otel.GetMeterProvider). A nil mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithRootSpans makes a span for a decision whose context holds no span
// (default false: such a decision is only counted in the metrics). A
// decision made outside any trace, by a background job or in a request the
// application does not trace, would otherwise start a trace of one span for
// every call.
func WithRootSpans(on bool) Option {
	return optionFunc(func(c *config) { c.roots = on })
}

// WithSpanEvents records each decision as an event named "ratelimit" on
// the span in the caller's context, with the decision span's ratelimit.*
// attributes and error.type, instead of as a child span (default false). A decision whose
// context holds no recording span then leaves no trace; WithRootSpans does
// not apply. The caller's span status is never changed, even for a backend
// failure.
//
// An event costs far less than a span: no span to allocate, and nothing
// handed to the span processor (the SDK's batch processor wakes its
// goroutine for every span), at the price of the decision's own timing in
// the trace view (the event is stamped when Redis answered).
func WithSpanEvents(on bool) Option {
	return optionFunc(func(c *config) { c.events = on })
}

// Subscriber turns each rate-limit decision into a span and metric
// measurements (see the package documentation). It is a
// ratelimit.Subscriber; subscribe it to any number of limiters.
//
// Create one with NewSubscriber. A Subscriber is safe for concurrent use.
type Subscriber struct {
	tracer   trace.Tracer
	roots    bool
	events   bool
	duration metric.Float64Histogram
	circuit  metric.Int64Gauge
	changes  metric.Int64Counter
	refunded metric.Int64Counter

	// The decision and cost counts live in st, which the meter's callback
	// reads at collection (see NewSubscriber).
	st *state
}

// state is what the observable counters' callback reads: the counts, and
// the series they are kept by, nothing else of the Subscriber.
type state struct {
	series telemetrykit.COWMap[seriesKey, *series]
}

// NewSubscriber returns a Subscriber. An error creating an instrument (which
// the SDK reports only for invalid names or options, never here) goes to
// otel.Handle, and the instrument it returned, a no-op one, is used.
func NewSubscriber(opts ...Option) *Subscriber {
	var cfg config
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	s := &Subscriber{
		roots:  cfg.roots,
		events: cfg.events,
		tracer: cfg.tp.Tracer(ScopeName,
			trace.WithInstrumentationVersion(version()), trace.WithSchemaURL(semconv.SchemaURL)),
		st: &state{},
	}
	meter := cfg.mp.Meter(ScopeName,
		metric.WithInstrumentationVersion(version()), metric.WithSchemaURL(semconv.SchemaURL))
	// Decisions and cost are counted here with atomic adds and observed at
	// collection: a synchronous counter's Add costs the SDK a pass over the
	// attribute set on every call (about 200 ns each on the development
	// machine, two per decision), an atomic add a few ns.
	decisions, err := meter.Int64ObservableCounter(DecisionsMetric, metric.WithUnit("{decision}"),
		metric.WithDescription("Rate-limit decisions, by decision (allowed or blocked) and reason (quota, shadow, fail_open, fail_closed)."))
	handle(err)
	cost, err := meter.Int64ObservableCounter(CostMetric, metric.WithUnit("{token}"),
		metric.WithDescription("Cost units (tokens) asked for in rate-limit decisions, by decision and reason: the cost granted is the allowed part."))
	handle(err)
	// Never unregistered: the counts stay with the MeterProvider, as a
	// synchronous counter's sums do, so that a Subscriber dropped with its
	// limiters (a reload, a short job before the last export) takes nothing
	// back from a monotonic sum. What stays is st alone.
	_, err = meter.RegisterCallback(s.st.observe(decisions, cost), decisions, cost)
	handle(err)
	s.duration, err = meter.Float64Histogram(DurationMetric, metric.WithUnit("s"),
		metric.WithDescription("Duration of the Redis round trip of a rate-limit decision, failed ones included."),
		metric.WithExplicitBucketBoundaries(telemetrykit.DurationBuckets...))
	handle(err)
	s.circuit, err = meter.Int64Gauge(CircuitOpenMetric, metric.WithUnit("1"),
		metric.WithDescription("1 while the limiter's circuit breaker skips Redis (open or half-open), 0 when closed."))
	handle(err)
	s.changes, err = meter.Int64Counter(CircuitTransitionsMetric, metric.WithUnit("{transition}"),
		metric.WithDescription("Circuit breaker state changes, by the state changed to."))
	handle(err)
	s.refunded, err = meter.Int64Counter(RefundedMetric, metric.WithUnit("{token}"),
		metric.WithDescription("Cost units given back by Refund: reserved by a decision, then not used."))
	handle(err)
	return s
}

// OnBreakerChange implements ratelimit.BreakerSubscriber: it sets the
// circuit gauge, counts the transition, and adds an event named
// CircuitEventName to the span in ctx (that of the call that caused the
// change) when it is recording.
func (s *Subscriber) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	ns, alg := NamespaceKey.String(c.Namespace), AlgorithmKey.String(c.Algorithm.String())
	open := int64(0)
	if c.To != ratelimit.BreakerClosed {
		open = 1
	}
	s.circuit.Record(ctx, open, metric.WithAttributes(ns, alg))
	state := CircuitStateKey.String(c.To.String())
	s.changes.Add(ctx, 1, metric.WithAttributes(ns, alg, state))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{ns, alg, state}
		if be := backendError(c.Err); be != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(be.Type.String()))
		}
		span.AddEvent(CircuitEventName, trace.WithAttributes(attrs...), trace.WithTimestamp(c.At))
	}
}

// OnRefundEvent implements ratelimit.RefundSubscriber: it adds the amount
// given back to RefundedMetric and, when the span in ctx is recording, an
// event named RefundEventName with namespace, algorithm, the amount (as
// ratelimit.cost), the remaining cost after it, and error.type when Redis
// failed. A refund is not a decision: it gets no span of its own.
func (s *Subscriber) OnRefundEvent(ctx context.Context, r ratelimit.RefundEvent) {
	ns, alg := NamespaceKey.String(r.Namespace), AlgorithmKey.String(r.Algorithm.String())
	if r.Err == nil && r.Amount > 0 {
		s.refunded.Add(ctx, r.Amount, metric.WithAttributes(ns, alg))
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{ns, alg, CostKey.Int64(r.Amount)}
	if r.Err != nil {
		errType := ratelimit.ErrorOther
		if be := backendError(r.Err); be != nil {
			errType = be.Type
		}
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType.String()))
	} else {
		attrs = append(attrs, RemainingKey.Int64(r.Result.Remaining))
	}
	span.AddEvent(RefundEventName, trace.WithAttributes(attrs...))
}

var (
	_ ratelimit.BreakerSubscriber = (*Subscriber)(nil)
	_ ratelimit.RefundSubscriber  = (*Subscriber)(nil)
)

func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

// version is the module's version when the program was built from a
// released module, else "" (then no version is set).
func version() string {
	const module = "github.com/distributed-rate-limiter/ratelimit-go"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	m := &bi.Main
	for _, d := range bi.Deps {
		if d.Path == module {
			m = d
		}
	}
	if m.Path != module || m.Version == "(devel)" {
		return ""
	}
	return m.Version
}

// OnDecision implements ratelimit.Subscriber: it records the decision's
// span and metrics. An event without a Start time (one that was not timed)
// gets a span timed by the SDK's clock and no duration measurement.
func (s *Subscriber) OnDecision(ctx context.Context, e ratelimit.Event) {
	sr := s.lookup(e)
	o := sr.outcome(e.Result.Allowed, e.Result.Reason)
	timed := !e.Start.IsZero()
	// A failed event carries a *BackendError; a replayed one may carry
	// anything, which counts as type other.
	var be *ratelimit.BackendError
	errType := ratelimit.ErrorOther
	if e.Err != nil {
		be = backendError(e.Err)
		errType = ratelimit.ErrorTypeOf(e.Err)
	}

	t := sr.tally(e.Result.Allowed, e.Result.Reason)
	t.decisions.Add(1)
	if e.Cost > 0 {
		t.cost.Add(e.Cost)
	}
	if timed {
		if e.Err == nil {
			s.duration.Record(ctx, e.Duration.Seconds(), sr.recordOK...)
		} else {
			s.duration.Record(ctx, e.Duration.Seconds(), sr.recordErr(errType)...)
		}
	}
	switch {
	case s.events:
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			s.event(span, o, e, be, errType, timed)
		}
	case s.roots || trace.SpanContextFromContext(ctx).IsValid():
		s.span(ctx, o, e, be, errType, timed)
	}
}

func (s *Subscriber) span(ctx context.Context, o *outcome, e ratelimit.Event, be *ratelimit.BackendError, errType ratelimit.ErrorType, timed bool) {
	// What a sampler may decide on goes in at start, from a precomputed
	// option; the rest only into a recording span, so that an unsampled
	// decision copies as little as possible.
	var span trace.Span
	if timed {
		_, span = s.tracer.Start(ctx, o.spanName, o.start[0], o.start[1], trace.WithTimestamp(e.Start))
	} else {
		_, span = s.tracer.Start(ctx, o.spanName, o.start...)
	}
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, len(o.late)+3)
		if errType != ratelimit.ErrorCircuitOpen { // an open circuit sent no script call
			attrs = append(attrs, o.late...)
		}
		span.SetAttributes(decisionAttrs(attrs, e, be, errType)...)
		if e.Err != nil {
			span.SetStatus(codes.Error, e.Err.Error())
		}
	}
	if timed {
		span.End(trace.WithTimestamp(e.Start.Add(e.Duration)))
	} else {
		span.End()
	}
}

// event adds the decision to span as an event.
func (s *Subscriber) event(span trace.Span, o *outcome, e ratelimit.Event, be *ratelimit.BackendError, errType ratelimit.ErrorType, timed bool) {
	attrs := append(make([]attribute.KeyValue, 0, len(o.eventAttrs)+3), o.eventAttrs...)
	attrs = decisionAttrs(attrs, e, be, errType)
	if timed {
		span.AddEvent(EventName, trace.WithAttributes(attrs...), trace.WithTimestamp(e.Start.Add(e.Duration)))
	} else {
		span.AddEvent(EventName, trace.WithAttributes(attrs...))
	}
}

// EventName is the name of the span event WithSpanEvents records.
const EventName = "ratelimit"

// decisionAttrs appends the decision's own attributes to attrs.
func decisionAttrs(attrs []attribute.KeyValue, e ratelimit.Event, be *ratelimit.BackendError, errType ratelimit.ErrorType) []attribute.KeyValue {
	attrs = append(attrs, CostKey.Int64(e.Cost))
	if e.Shard > 0 {
		attrs = append(attrs, ShardKey.Int(e.Shard))
	}
	if e.Err == nil {
		attrs = append(attrs, RemainingKey.Int64(e.Result.Remaining))
		if !e.Result.Allowed || e.Result.Reason == ratelimit.ReasonShadow { // a shadow pass keeps its denial's RetryAfter
			attrs = append(attrs, RetryAfterKey.Float64(e.Result.RetryAfter.Seconds()))
		}
	} else {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType.String()))
		if be != nil && be.Code != "" {
			attrs = append(attrs, semconv.DBResponseStatusCode(be.Code))
		}
	}
	return attrs
}

var spanKind = trace.WithSpanKind(trace.SpanKindClient)

// backendError returns the *ratelimit.BackendError in err's chain, or nil.
func backendError(err error) *ratelimit.BackendError {
	if be, ok := err.(*ratelimit.BackendError); ok {
		return be
	}
	var be *ratelimit.BackendError
	if errors.As(err, &be) {
		return be
	}
	return nil
}

// seriesKey identifies what is precomputed once: a limiter's namespace,
// algorithm and server.
type seriesKey struct {
	namespace string
	algorithm ratelimit.Algorithm
	server    string
}

// series holds the precomputed attributes and options of one seriesKey.
// Outcomes and error types are resolved on first use, so that a new Reason
// or ErrorType needs no change here.
type series struct {
	namespace, algorithm string
	spanName             string
	late                 []attribute.KeyValue // static span attributes set after start
	base                 []attribute.KeyValue // metric attributes, and the span's at start
	recordOK             []metric.RecordOption
	outcomes             telemetrykit.ByOutcome[outcome]
	errs                 telemetrykit.ByErrorType[[]metric.RecordOption]
	tallies              telemetrykit.COWMap[outcomeKey, *tally]
}

// outcomeKey is a decision (allowed or not) and its reason.
type outcomeKey struct {
	allowed bool
	reason  ratelimit.Reason
}

// tally counts the decisions and cost of one series and outcome since the
// Subscriber was made; the callback observes them as cumulative sums.
type tally struct {
	decisions, cost atomic.Int64
	observe         metric.ObserveOption // the outcome's attribute set
}

func (sr *series) tally(allowed bool, r ratelimit.Reason) *tally {
	return sr.tallies.LoadOrBuild(outcomeKey{allowed, r}, func() *tally {
		return &tally{observe: metric.WithAttributeSet(sr.outcomeSet(allowed, r))}
	})
}

// outcomeSet is the attribute set of the decision and cost counts.
func (sr *series) outcomeSet(allowed bool, r ratelimit.Reason) attribute.Set {
	return attribute.NewSet(NamespaceKey.String(sr.namespace), AlgorithmKey.String(sr.algorithm),
		DecisionKey.String(telemetrykit.Decision(allowed)), ReasonKey.String(r.String()))
}

// observe is the callback of the decision and cost counters.
func (st *state) observe(decisions, cost metric.Int64Observable) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		for _, sr := range st.series.All() {
			for _, t := range sr.tallies.All() {
				o.ObserveInt64(decisions, t.decisions.Load(), t.observe)
				// As the synchronous counter did: no cost series until
				// a decision with a cost.
				if c := t.cost.Load(); c > 0 {
					o.ObserveInt64(cost, c, t.observe)
				}
			}
		}
		return nil
	}
}

// outcome holds what depends on a decision and reason.
type outcome struct {
	spanName string
	start    []trace.SpanStartOption // kind and attributes
	late     []attribute.KeyValue    // the series' late attributes
	// eventAttrs are the ratelimit.* attributes of the outcome, for an
	// event (the db.* and server.* ones describe a span of its own).
	eventAttrs []attribute.KeyValue
}

func (s *Subscriber) lookup(e ratelimit.Event) *series {
	k := seriesKey{e.Namespace, e.Algorithm, e.ServerAddr}
	return s.st.series.LoadOrBuild(k, func() *series { return newSeries(k) })
}

func newSeries(k seriesKey) *series {
	alg := k.algorithm.String()
	sr := &series{
		namespace: k.namespace,
		algorithm: alg,
		spanName:  "ratelimit " + k.namespace,
		// No db.operation.name: the event does not say whether the engine
		// sent FCALL (Redis 7 functions) or EVALSHA (servers without
		// them), and semconv asks for it only where it is known.
		late: []attribute.KeyValue{
			semconv.DBStoredProcedureName(alg),
		},
		base: []attribute.KeyValue{
			NamespaceKey.String(k.namespace),
			AlgorithmKey.String(alg),
			semconv.DBSystemNameRedis,
		},
	}
	if k.server != "" {
		host, port, err := net.SplitHostPort(k.server)
		if err != nil {
			sr.late = append(sr.late, semconv.ServerAddress(k.server))
		} else {
			sr.late = append(sr.late, semconv.ServerAddress(host))
			if p, err := strconv.Atoi(port); err == nil {
				sr.late = append(sr.late, semconv.ServerPort(p))
			}
		}
	}
	sr.recordOK = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sr.base...))}
	return sr
}

func (sr *series) outcome(allowed bool, r ratelimit.Reason) *outcome {
	return sr.outcomes.Get(allowed, r, func() outcome {
		dk, rk := DecisionKey.String(telemetrykit.Decision(allowed)), ReasonKey.String(r.String())
		attrs := append(append(make([]attribute.KeyValue, 0, len(sr.base)+2), sr.base...), dk, rk)
		return outcome{
			spanName:   sr.spanName,
			late:       sr.late,
			eventAttrs: []attribute.KeyValue{NamespaceKey.String(sr.namespace), AlgorithmKey.String(sr.algorithm), dk, rk},
			start:      []trace.SpanStartOption{spanKind, trace.WithAttributes(attrs...)},
		}
	})
}

func (sr *series) recordErr(t ratelimit.ErrorType) []metric.RecordOption {
	return *sr.errs.Get(t, func() []metric.RecordOption {
		set := attribute.NewSet(append(append([]attribute.KeyValue(nil), sr.base...), semconv.ErrorTypeKey.String(t.String()))...)
		return []metric.RecordOption{metric.WithAttributeSet(set)}
	})
}

var _ ratelimit.Subscriber = (*Subscriber)(nil)
