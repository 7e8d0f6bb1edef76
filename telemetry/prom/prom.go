package prom

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Metric names. They are part of the package's API: dashboards and alert
// rules are written against them, so they do not change.
const (
	// DecisionsName is the counter of decisions, labelled namespace,
	// algorithm, decision and reason.
	DecisionsName = "ratelimit_decisions_total"
	// CostName is the counter of cost units asked for, with the labels of
	// DecisionsName.
	CostName = "ratelimit_cost_total"
	// BackendDurationName is the histogram of Redis round trips in
	// seconds, labelled namespace and algorithm.
	BackendDurationName = "ratelimit_backend_duration_seconds"
	// BackendErrorsName is the counter of backend failures, labelled
	// namespace, algorithm and type.
	BackendErrorsName = "ratelimit_backend_errors_total"
	// DroppedName is the counter of events an asynchronous subscriber
	// dropped, labelled namespace, algorithm and subscriber.
	DroppedName = "ratelimit_events_dropped_total"
	// CircuitOpenName is the gauge of circuit breakers (see
	// ratelimit.WithBreaker), labelled namespace and algorithm: 1 while the
	// limiter's breaker skips Redis (open or half-open), 0 when it is
	// closed. A limiter has the series once its breaker first changed
	// state.
	CircuitOpenName = "ratelimit_circuit_open"
	// CircuitTransitionsName is the counter of circuit breaker state
	// changes, labelled namespace, algorithm and to.
	CircuitTransitionsName = "ratelimit_circuit_transitions_total"
	// RefundedName is the counter of cost units given back by
	// ratelimit's Refund, labelled namespace and algorithm: what was
	// granted and then not used is CostName's allowed part minus this.
	RefundedName = "ratelimit_cost_refunded_total"
	// RefundErrorsName is the counter of refunds Redis failed (nothing
	// was given back, or the reply was lost), labelled namespace,
	// algorithm and type. They are not in BackendErrorsName, which
	// counts decisions.
	RefundErrorsName = "ratelimit_refund_errors_total"
)

// Label names.
const (
	// LabelNamespace is the limiter's namespace (ratelimit.WithNamespace).
	LabelNamespace = "namespace"
	// LabelAlgorithm is the limiter's algorithm ("token_bucket").
	LabelAlgorithm = "algorithm"
	// LabelDecision is Allowed or Blocked.
	LabelDecision = "decision"
	// LabelReason is the ratelimit.Reason: "quota", "shadow",
	// "fail_open" or "fail_closed".
	LabelReason = "reason"
	// LabelType is the ratelimit.ErrorType of a backend failure.
	LabelType = "type"
	// LabelSubscriber names the asynchronous subscriber that dropped
	// events (see Collector.Dropped).
	LabelSubscriber = "subscriber"
	// LabelTo is the state a circuit breaker changed to: "closed", "open"
	// or "half_open".
	LabelTo = "to"
)

// Values of the decision label.
const (
	// Allowed is the decision label of a call that was let through.
	Allowed = "allowed"
	// Blocked is the decision label of a call that was denied.
	Blocked = "blocked"
)

// DefaultBuckets are the classic buckets of the duration histogram, in
// seconds: sub-millisecond resolution for healthy round trips (20 to 100µs
// on loopback, a few hundred on a LAN), then up to the default backend
// timeout (100ms) and beyond.
var DefaultBuckets = []float64{
	0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
}

// Native-histogram settings of the duration histogram.
const (
	// NativeBucketFactor bounds the growth from one native bucket to the
	// next (about 9% wide buckets).
	NativeBucketFactor = 1.1
	// NativeMaxBuckets caps the number of native buckets; past it the
	// resolution is halved. 1.1 spans 10µs to 10s in about 160 buckets.
	NativeMaxBuckets = 160
	// NativeMinResetDuration is how long the histogram waits before it
	// resets its native buckets rather than halving their resolution.
	NativeMinResetDuration = time.Hour
)

// An Option configures NewCollector.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	buckets     []float64
	constLabels prometheus.Labels
	exemplars   bool
}

// WithBuckets replaces DefaultBuckets as the classic buckets of the
// duration histogram: upper bounds in seconds, strictly increasing (else
// NewCollector fails). An empty list keeps the default. The slice is
// copied.
func WithBuckets(buckets ...float64) Option {
	return optionFunc(func(c *config) {
		if len(buckets) > 0 {
			c.buckets = append([]float64(nil), buckets...)
		}
	})
}

// WithConstLabels adds labels with fixed values to every metric, e.g. a
// service name when several share a registry. The map is copied. A key
// that is not a valid label name, or is one of the package's label names,
// makes NewCollector fail.
func WithConstLabels(labels prometheus.Labels) Option {
	return optionFunc(func(c *config) {
		c.constLabels = make(prometheus.Labels, len(labels))
		for k, v := range labels {
			c.constLabels[k] = v
		}
	})
}

// WithExemplars turns exemplars on the duration histogram on (the default)
// or off.
func WithExemplars(on bool) Option {
	return optionFunc(func(c *config) { c.exemplars = on })
}

// Collector turns rate-limit decisions into Prometheus metrics (see the
// package documentation for the list). It is a ratelimit.Subscriber, to
// subscribe to any number of limiters, and a prometheus.Collector, to
// register on a registry.
//
// Create one with NewCollector. A Collector is safe for concurrent use;
// OnDecision does not block and, once a limiter's namespace and algorithm
// have been seen, does not allocate unless it records an exemplar.
type Collector struct {
	decisions *prometheus.CounterVec
	cost      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	circuit   *prometheus.GaugeVec
	changes   *prometheus.CounterVec
	refunded  *prometheus.CounterVec
	refundErr *prometheus.CounterVec
	exemplars bool
	buckets   []float64

	cache seriesCache[*series]
}

// NewCollector returns a Collector. Register it with a prometheus.Registerer
// and subscribe it to limiters. Bad buckets or constant labels give an
// error wrapping ratelimit.ErrInvalidOption.
func NewCollector(opts ...Option) (*Collector, error) {
	cfg := config{buckets: slices.Clone(DefaultBuckets), exemplars: true}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	for i, b := range cfg.buckets {
		if math.IsNaN(b) || i > 0 && b <= cfg.buckets[i-1] {
			return nil, fmt.Errorf("%w: histogram buckets %v must be strictly increasing numbers", ratelimit.ErrInvalidOption, cfg.buckets)
		}
	}
	outcome := []string{LabelNamespace, LabelAlgorithm, LabelDecision, LabelReason}
	c := &Collector{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        DecisionsName,
			Help:        "Rate-limit decisions, by outcome: decision is allowed or blocked, reason is quota when Redis decided, shadow when shadow mode allowed what the quota would have blocked, and fail_open or fail_closed when Redis failed.",
			ConstLabels: cfg.constLabels,
		}, outcome),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        CostName,
			Help:        "Cost units (tokens) asked for in rate-limit decisions, by outcome: the cost granted is the allowed part.",
			ConstLabels: cfg.constLabels,
		}, outcome),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            BackendDurationName,
			Help:                            "Duration of the Redis round trip of a rate-limit decision, failed ones included.",
			ConstLabels:                     cfg.constLabels,
			Buckets:                         cfg.buckets,
			NativeHistogramBucketFactor:     NativeBucketFactor,
			NativeHistogramMaxBucketNumber:  NativeMaxBuckets,
			NativeHistogramMinResetDuration: NativeMinResetDuration,
		}, []string{LabelNamespace, LabelAlgorithm}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        BackendErrorsName,
			Help:        "Rate-limit decisions that Redis failed to make, by error type; the fail strategy decided them.",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm, LabelType}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        DroppedName,
			Help:        "Rate-limit events an asynchronous subscriber dropped because its queue was full or it was closed.",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm, LabelSubscriber}),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        CircuitOpenName,
			Help:        "1 while the limiter's circuit breaker skips Redis (open or half-open) and the fail strategy decides, 0 when it is closed.",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        CircuitTransitionsName,
			Help:        "Circuit breaker state changes, by the state changed to (closed, open, half_open).",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm, LabelTo}),
		refunded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        RefundedName,
			Help:        "Cost units (tokens) given back by Refund: reserved by a decision, then not used.",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm}),
		refundErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        RefundErrorsName,
			Help:        "Refunds that Redis failed, by error type: the cost was not given back.",
			ConstLabels: cfg.constLabels,
		}, []string{LabelNamespace, LabelAlgorithm, LabelType}),
		exemplars: cfg.exemplars,
		buckets:   cfg.buckets,
	}
	// A throwaway registry checks the descriptions (label names, clashes)
	// now rather than when the user registers, or panics, later.
	if err := prometheus.NewPedanticRegistry().Register(c); err != nil {
		return nil, fmt.Errorf("%w: %v", ratelimit.ErrInvalidOption, err)
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.decisions.Describe(ch)
	c.cost.Describe(ch)
	c.duration.Describe(ch)
	c.errors.Describe(ch)
	c.dropped.Describe(ch)
	c.circuit.Describe(ch)
	c.changes.Describe(ch)
	c.refunded.Describe(ch)
	c.refundErr.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.decisions.Collect(ch)
	c.cost.Collect(ch)
	c.duration.Collect(ch)
	c.errors.Collect(ch)
	c.dropped.Collect(ch)
	c.circuit.Collect(ch)
	c.changes.Collect(ch)
	c.refunded.Collect(ch)
	c.refundErr.Collect(ch)
}

// OnBreakerChange implements ratelimit.BreakerSubscriber: it sets the
// limiter's ratelimit_circuit_open gauge and counts the transition.
func (c *Collector) OnBreakerChange(_ context.Context, ch ratelimit.BreakerChange) {
	alg := ch.Algorithm.String()
	open := 0.0
	if ch.To != ratelimit.BreakerClosed {
		open = 1
	}
	c.circuit.WithLabelValues(ch.Namespace, alg).Set(open)
	c.changes.WithLabelValues(ch.Namespace, alg, ch.To.String()).Inc()
}

// OnRefundEvent implements ratelimit.RefundSubscriber: it adds the amount
// given back to ratelimit_cost_refunded_total, or counts the failure in
// ratelimit_refund_errors_total. Refunds are not decisions: they are not in
// the decision, cost or duration metrics.
func (c *Collector) OnRefundEvent(_ context.Context, r ratelimit.RefundEvent) {
	alg := r.Algorithm.String()
	if r.Err != nil {
		c.refundErr.WithLabelValues(r.Namespace, alg, errorType(r.Err).String()).Inc()
		return
	}
	if r.Amount > 0 {
		c.refunded.WithLabelValues(r.Namespace, alg).Add(float64(r.Amount))
	}
}

var (
	_ ratelimit.BreakerSubscriber = (*Collector)(nil)
	_ ratelimit.RefundSubscriber  = (*Collector)(nil)
)

// OnDecision implements ratelimit.Subscriber: it counts the decision and
// its cost, observes the backend duration (with an exemplar when ctx holds
// a sampled span) and counts a backend error. An event without a Start
// time (one that was not timed) is not observed in the histogram.
func (c *Collector) OnDecision(ctx context.Context, e ratelimit.Event) {
	s := c.cache.load(e.Namespace, e.Algorithm)
	if s == nil {
		s = c.cache.store(e.Namespace, e.Algorithm, c.newSeries)
	}
	o := s.outcome(e.Result.Allowed, e.Result.Reason)
	o.decisions.Inc()
	if e.Cost > 0 {
		o.cost.Add(float64(e.Cost))
	}
	if !e.Start.IsZero() {
		c.observe(ctx, s, e.Duration.Seconds(), e.Start.UnixNano()+int64(e.Duration))
	}
	if e.Err != nil {
		s.errorCounter(errorType(e.Err)).Inc()
	}
}

// ExemplarInterval is the least time between two exemplars of one bucket of
// one duration series. Prometheus keeps the last exemplar of each classic
// bucket per scrape, so more would be thrown away; each costs about a
// microsecond and a dozen allocations.
const ExemplarInterval = time.Second

// observe records v, observed at now (Unix ns), with an exemplar when ctx
// holds a sampled span and v's bucket has had none for ExemplarInterval.
func (c *Collector) observe(ctx context.Context, s *series, v float64, now int64) {
	if c.exemplars {
		if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() && sc.IsValid() {
			at := &s.exemplarAt[sort.SearchFloat64s(c.buckets, v)]
			if last := at.Load(); now-last >= int64(ExemplarInterval) && at.CompareAndSwap(last, now) {
				s.durationEx.ObserveWithExemplar(v, prometheus.Labels{
					"trace_id": sc.TraceID().String(),
					"span_id":  sc.SpanID().String(),
				})
				return
			}
		}
	}
	s.duration.Observe(v)
}

// Dropped returns a Subscriber that counts each event it receives in
// ratelimit_events_dropped_total, with subscriber as the label value. Pass
// it to telemetry.WithDropped:
//
//	telemetry.Async(sub, 1024, telemetry.WithDropped(metrics.Dropped("slog")))
//
// subscriber names the asynchronous subscriber; it must be a fixed name
// chosen in code, never a value from a request.
func (c *Collector) Dropped(subscriber string) ratelimit.Subscriber {
	return &droppedCounter{vec: c.dropped, subscriber: subscriber}
}

// droppedCounter counts dropped events per namespace and algorithm.
type droppedCounter struct {
	vec        *prometheus.CounterVec
	subscriber string
	cache      seriesCache[prometheus.Counter]
}

func (d *droppedCounter) OnDecision(_ context.Context, e ratelimit.Event) {
	ctr := d.cache.load(e.Namespace, e.Algorithm)
	if ctr == nil {
		ctr = d.cache.store(e.Namespace, e.Algorithm, func(ns string, alg ratelimit.Algorithm) prometheus.Counter {
			return d.vec.WithLabelValues(ns, alg.String(), d.subscriber)
		})
	}
	ctr.Inc()
}

// series holds the resolved child metrics of one namespace and algorithm.
// Outcomes and error types are resolved on first use, so that a new Reason
// or ErrorType shows up without a change here.
type series struct {
	c          *Collector
	namespace  string
	algorithm  string
	duration   prometheus.Observer
	durationEx prometheus.ExemplarObserver
	outcomes   [2][maxCached]atomic.Pointer[outcome]
	errs       [maxCached]atomic.Pointer[counter]
	// exemplarAt is when each classic bucket (and +Inf) last got an
	// exemplar, in Unix ns.
	exemplarAt []atomic.Int64
}

// maxCached bounds the reasons and error types whose children are cached;
// larger values are looked up on every event.
const maxCached = 16

type outcome struct{ decisions, cost prometheus.Counter }

type counter struct{ prometheus.Counter }

func (c *Collector) newSeries(ns string, alg ratelimit.Algorithm) *series {
	s := &series{c: c, namespace: ns, algorithm: alg.String(), exemplarAt: make([]atomic.Int64, len(c.buckets)+1)}
	obs := c.duration.WithLabelValues(ns, s.algorithm)
	s.duration = obs
	s.durationEx = obs.(prometheus.ExemplarObserver)
	// The series every limiter has, so that ratios exist from the start.
	s.outcome(true, ratelimit.ReasonQuota)
	s.outcome(false, ratelimit.ReasonQuota)
	return s
}

func (s *series) outcome(allowed bool, r ratelimit.Reason) *outcome {
	d := 0
	if allowed {
		d = 1
	}
	if int(r) < maxCached {
		if o := s.outcomes[d][r].Load(); o != nil {
			return o
		}
	}
	decision := Blocked
	if allowed {
		decision = Allowed
	}
	reason := r.String()
	o := &outcome{
		decisions: s.c.decisions.WithLabelValues(s.namespace, s.algorithm, decision, reason),
		cost:      s.c.cost.WithLabelValues(s.namespace, s.algorithm, decision, reason),
	}
	if int(r) < maxCached {
		s.outcomes[d][r].Store(o)
	}
	return o
}

func (s *series) errorCounter(t ratelimit.ErrorType) prometheus.Counter {
	if int(t) < maxCached {
		if ctr := s.errs[t].Load(); ctr != nil {
			return ctr.Counter
		}
	}
	ctr := &counter{s.c.errors.WithLabelValues(s.namespace, s.algorithm, t.String())}
	if int(t) < maxCached {
		s.errs[t].Store(ctr)
	}
	return ctr.Counter
}

// errorType returns the type of a backend error; an error that is not a
// *ratelimit.BackendError (a replayed or synthetic event) counts as other.
func errorType(err error) ratelimit.ErrorType {
	if be, ok := err.(*ratelimit.BackendError); ok {
		return be.Type
	}
	var be *ratelimit.BackendError
	if errors.As(err, &be) {
		return be.Type
	}
	return ratelimit.ErrorOther
}

// seriesKey identifies a limiter's series: namespaces and algorithms are
// bounded by the limiters a program creates.
type seriesKey struct {
	namespace string
	algorithm ratelimit.Algorithm
}

// seriesCache maps a namespace and algorithm to a resolved value. Reads are
// one atomic load and a map lookup, without allocation or lock; the map is
// copied on write, which happens once per combination.
type seriesCache[V comparable] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[seriesKey]V]
}

func (c *seriesCache[V]) load(ns string, alg ratelimit.Algorithm) V {
	var zero V
	m := c.m.Load()
	if m == nil {
		return zero
	}
	return (*m)[seriesKey{ns, alg}]
}

func (c *seriesCache[V]) store(ns string, alg ratelimit.Algorithm, build func(string, ratelimit.Algorithm) V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	k := seriesKey{ns, alg}
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok && v != zero {
			return v
		}
	}
	next := make(map[seriesKey]V, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	v := build(ns, alg)
	next[k] = v
	c.m.Store(&next)
	return v
}

var (
	_ ratelimit.Subscriber = (*Collector)(nil)
	_ prometheus.Collector = (*Collector)(nil)
	_ ratelimit.Subscriber = (*droppedCounter)(nil)
)
