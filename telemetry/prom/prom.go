package prom

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/telemetrykit"
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

// Label names, and the values of the decision label.
const (
	labelNamespace  = "namespace"
	labelAlgorithm  = "algorithm"
	labelDecision   = "decision"
	labelReason     = "reason"
	labelType       = "type"
	labelSubscriber = "subscriber"
	labelTo         = "to"
)

// Native-histogram settings of the duration histogram: about 9% wide
// buckets, at most 160 (10 µs to 10 s), halved in resolution past that,
// and reset rather than halved at most hourly.
const (
	nativeBucketFactor     = 1.1
	nativeMaxBuckets       = 160
	nativeMinResetDuration = time.Hour
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

// WithBuckets sets the classic buckets of the duration histogram: upper
// bounds in seconds, strictly increasing (else NewCollector fails). The
// default is 25 µs to 1 s; an empty list keeps it. The slice is copied.
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

	cache telemetrykit.COWMap[seriesKey, *series]
}

// NewCollector returns a Collector. Register it with a prometheus.Registerer
// and subscribe it to limiters. Bad buckets or constant labels give an
// error wrapping ratelimit.ErrInvalidOption.
func NewCollector(opts ...Option) (*Collector, error) {
	cfg := config{buckets: slices.Clone(telemetrykit.DurationBuckets), exemplars: true}
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
	outcome := []string{labelNamespace, labelAlgorithm, labelDecision, labelReason}
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
			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: nativeMinResetDuration,
		}, []string{labelNamespace, labelAlgorithm}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        BackendErrorsName,
			Help:        "Rate-limit decisions that Redis failed to make, by error type; the fail strategy decided them.",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm, labelType}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        DroppedName,
			Help:        "Rate-limit events an asynchronous subscriber dropped because its queue was full or it was closed.",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm, labelSubscriber}),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        CircuitOpenName,
			Help:        "1 while the limiter's circuit breaker skips Redis (open or half-open) and the fail strategy decides, 0 when it is closed.",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        CircuitTransitionsName,
			Help:        "Circuit breaker state changes, by the state changed to (closed, open, half_open).",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm, labelTo}),
		refunded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        RefundedName,
			Help:        "Cost units (tokens) given back by Refund: reserved by a decision, then not used.",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm}),
		refundErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        RefundErrorsName,
			Help:        "Refunds that Redis failed, by error type: the cost was not given back.",
			ConstLabels: cfg.constLabels,
		}, []string{labelNamespace, labelAlgorithm, labelType}),
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
		c.refundErr.WithLabelValues(r.Namespace, alg, ratelimit.ErrorTypeOf(r.Err).String()).Inc()
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
	s := c.series(e.Namespace, e.Algorithm)
	o := s.outcome(e.Result.Allowed, e.Result.Reason)
	o.decisions.Inc()
	if e.Cost > 0 {
		o.cost.Add(float64(e.Cost))
	}
	if !e.Start.IsZero() {
		c.observe(ctx, s, e.Duration.Seconds(), e.Start.UnixNano()+int64(e.Duration))
	}
	if e.Err != nil {
		s.errorCounter(ratelimit.ErrorTypeOf(e.Err)).Inc()
	}
}

// exemplarInterval is the least time between two exemplars of one bucket of
// one duration series. Prometheus keeps the last exemplar of each classic
// bucket per scrape, so more would be thrown away; each costs about a
// microsecond and a dozen allocations.
const exemplarInterval = time.Second

// observe records v, observed at now (Unix ns), with an exemplar when ctx
// holds a sampled span and v's bucket has had none for exemplarInterval.
func (c *Collector) observe(ctx context.Context, s *series, v float64, now int64) {
	if c.exemplars {
		if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() && sc.IsValid() {
			at := &s.exemplarAt[sort.SearchFloat64s(c.buckets, v)]
			if last := at.Load(); now-last >= int64(exemplarInterval) && at.CompareAndSwap(last, now) {
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
	cache      telemetrykit.COWMap[seriesKey, prometheus.Counter]
}

func (d *droppedCounter) OnDecision(_ context.Context, e ratelimit.Event) {
	d.cache.LoadOrBuild(seriesKey{e.Namespace, e.Algorithm}, func() prometheus.Counter {
		return d.vec.WithLabelValues(e.Namespace, e.Algorithm.String(), d.subscriber)
	}).Inc()
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
	outcomes   telemetrykit.ByOutcome[outcome]
	errs       telemetrykit.ByErrorType[prometheus.Counter]
	// exemplarAt is when each classic bucket (and +Inf) last got an
	// exemplar, in Unix ns.
	exemplarAt []atomic.Int64
}

type outcome struct{ decisions, cost prometheus.Counter }

// seriesKey identifies a limiter's series: namespaces and algorithms are
// bounded by the limiters a program creates.
type seriesKey struct {
	namespace string
	algorithm ratelimit.Algorithm
}

// series returns the series of a namespace and algorithm, made on first
// use with the series every dashboard and alert query reads already there,
// at zero: decisions allowed and blocked by the quota, and backend errors
// of every type. A healthy system then shows 0, not "No data".
func (c *Collector) series(ns string, alg ratelimit.Algorithm) *series {
	return c.cache.LoadOrBuild(seriesKey{ns, alg}, func() *series {
		s := &series{c: c, namespace: ns, algorithm: alg.String(), exemplarAt: make([]atomic.Int64, len(c.buckets)+1)}
		obs := c.duration.WithLabelValues(ns, s.algorithm)
		s.duration = obs
		s.durationEx = obs.(prometheus.ExemplarObserver)
		s.outcome(true, ratelimit.ReasonQuota)
		s.outcome(false, ratelimit.ReasonQuota)
		for t := ratelimit.ErrorOther; t <= ratelimit.ErrorCircuitOpen; t++ {
			s.errorCounter(t)
		}
		c.refunded.WithLabelValues(ns, s.algorithm)
		return s
	})
}

func (s *series) outcome(allowed bool, r ratelimit.Reason) *outcome {
	return s.outcomes.Get(allowed, r, func() outcome {
		decision, reason := telemetrykit.Decision(allowed), r.String()
		return outcome{
			decisions: s.c.decisions.WithLabelValues(s.namespace, s.algorithm, decision, reason),
			cost:      s.c.cost.WithLabelValues(s.namespace, s.algorithm, decision, reason),
		}
	})
}

func (s *series) errorCounter(t ratelimit.ErrorType) prometheus.Counter {
	return *s.errs.Get(t, func() prometheus.Counter {
		return s.c.errors.WithLabelValues(s.namespace, s.algorithm, t.String())
	})
}

var (
	_ ratelimit.Subscriber = (*Collector)(nil)
	_ prometheus.Collector = (*Collector)(nil)
	_ ratelimit.Subscriber = (*droppedCounter)(nil)
)
