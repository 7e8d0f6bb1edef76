package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Request is a rate limit request, from Envoy's gRPC or from the HTTP API.
type Request struct {
	Domain      string
	Descriptors []Descriptor
	// Hits is the request's hits_addend: the cost of each descriptor
	// that has none of its own; 0 means 1.
	Hits uint64
}

// Descriptor is one descriptor of a request.
type Descriptor struct {
	Entries  []Entry
	Override *Override
	// Hits, when not nil, is the descriptor's own hits_addend (0 is a
	// cost of 0: the descriptor is reported, not charged).
	Hits *uint64
}

// Override is a descriptor's limit override.
type Override struct {
	RequestsPerUnit uint32
	Unit            string // "second", "minute", ...
	Multiplier      uint32 // 0 or 1: one unit
}

// Code is a descriptor's or a request's outcome, numbered as Envoy's
// RateLimitResponse.Code.
type Code int32

const (
	CodeUnknown   Code = 0
	CodeOK        Code = 1
	CodeOverLimit Code = 2
)

// String returns "OK", "OVER_LIMIT" or "UNKNOWN", Envoy's names.
func (c Code) String() string {
	switch c {
	case CodeOK:
		return "OK"
	case CodeOverLimit:
		return "OVER_LIMIT"
	}
	return "UNKNOWN"
}

// Status is the outcome of one descriptor.
type Status struct {
	Code Code
	// Rule is the limit that applied, nil when none did (no match, an
	// unknown domain, replaced); Limited reports whether it was charged
	// (not unlimited).
	Rule    *Rule
	Limited bool
	// Multiplier is the override's unit multiplier (0 when none).
	Multiplier uint32
	// Result is the library's result for the descriptor (Limited only).
	Result    ratelimit.Result
	Remaining uint32
	Reset     time.Duration
	Shadow    bool
}

// Decision is the outcome of a request.
type Decision struct {
	Code     Code
	Statuses []Status
	// DecidedAt is Redis's time of the decision of the enforced
	// descriptors (zero when Redis did not decide, or none was charged):
	// the refund of this request names it.
	DecidedAt time.Time
	// Reason is how the enforced descriptors were decided.
	Reason ratelimit.Reason
}

// Mode is what a request does.
type Mode int

const (
	ModeCheck  Mode = iota // decide and spend (ShouldRateLimit, POST /json, /v1/check)
	ModePeek               // decide without spending
	ModeRefund             // give the costs back to the check decided at Request time
	ModeReset              // forget the descriptors' state
)

// Bad-request errors (InvalidArgument, 400).
var (
	errBadRequest = errors.New("ratelimitd: bad request")
)

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// Service decides requests against the loaded configuration.
type Service struct {
	rdb            redis.UniversalClient
	bus            *ratelimit.Bus
	breaker        *ratelimit.Breaker // nil: none
	defaultTimeout time.Duration
	logger         *slog.Logger
	metrics        *serviceMetrics
	identityKey    []byte // HMAC secret for identities; nil: SHA-256

	config atomic.Pointer[runtimeConfig]

	mu       sync.Mutex
	chargers map[chargerKey]*ratelimit.Charger
}

// runtimeConfig is a Config with its chargers.
type runtimeConfig struct {
	cfg     *Config
	domains map[string]*domainRuntime
	loaded  time.Time
}

type domainRuntime struct {
	d               *Domain
	enforce, shadow *ratelimit.Charger
}

// chargerKey is what a domain's charger depends on. Chargers are kept
// across reloads, so that a reload creates none for unchanged domains (a
// charger's breaker listener lives as long as the process).
type chargerKey struct {
	domain  string
	fail    ratelimit.FailStrategy
	timeout time.Duration
	tag     bool
	shadow  bool
}

func newService(rdb redis.UniversalClient, bus *ratelimit.Bus, breaker *ratelimit.Breaker, timeout time.Duration, logger *slog.Logger, m *serviceMetrics) *Service {
	return &Service{rdb: rdb, bus: bus, breaker: breaker, defaultTimeout: timeout, logger: logger, metrics: m, chargers: map[chargerKey]*ratelimit.Charger{}}
}

func (s *Service) charger(k chargerKey) (*ratelimit.Charger, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.chargers[k]; ok {
		return c, nil
	}
	opts := []ratelimit.Option{
		ratelimit.WithNamespace(k.domain),
		ratelimit.WithBus(s.bus),
		ratelimit.WithTimeout(k.timeout),
	}
	if k.shadow {
		opts = append(opts, ratelimit.WithShadow())
	} else {
		opts = append(opts, ratelimit.WithFailStrategy(k.fail))
	}
	if s.breaker != nil {
		opts = append(opts, ratelimit.WithBreaker(s.breaker))
	}
	if s.identityKey != nil {
		opts = append(opts, ratelimit.WithIdentityKey(s.identityKey))
	}
	c, err := ratelimit.NewCharger(s.rdb, opts...)
	if err != nil {
		return nil, err
	}
	if k.tag {
		// One slot per domain on a Cluster: every request is one script.
		if c, err = c.Tagged(k.domain); err != nil {
			return nil, err
		}
	}
	s.chargers[k] = c
	return c, nil
}

// Apply makes cfg the configuration in force.
func (s *Service) Apply(cfg *Config) error {
	rc := &runtimeConfig{cfg: cfg, domains: map[string]*domainRuntime{}, loaded: time.Now()}
	for name, d := range cfg.Domains {
		timeout := d.Timeout
		if timeout == 0 {
			timeout = s.defaultTimeout
		}
		k := chargerKey{domain: name, fail: d.Fail, timeout: timeout, tag: d.DomainTag}
		enf, err := s.charger(k)
		if err != nil {
			return fmt.Errorf("domain %s: %w", name, err)
		}
		k.shadow, k.fail = true, ratelimit.FailOpen
		sh, err := s.charger(k)
		if err != nil {
			return fmt.Errorf("domain %s: %w", name, err)
		}
		rc.domains[name] = &domainRuntime{d: d, enforce: enf, shadow: sh}
	}
	s.config.Store(rc)
	return nil
}

// Ready reports whether a configuration is loaded.
func (s *Service) Ready() bool { return s.config.Load() != nil }

// plan is how one descriptor is decided.
type plan struct {
	rule       *Rule
	multiplier uint32
	charge     ratelimit.Charge
	kind       planKind
	shared     []string // share_threshold patterns, per entry
}

type planKind int

const (
	planNone      planKind = iota // no limit: OK
	planUnlimited                 // unlimited: OK
	planDeny                      // never fits (requests_per_unit 0, or a cost above the limit)
	planCharge                    // charged, enforced
	planShadow                    // charged in shadow mode
)

// Decide runs req in mode. spentAt is, for ModeRefund, the DecidedAt of
// the check being refunded.
func (s *Service) Decide(ctx context.Context, req Request, mode Mode, spentAt time.Time) (Decision, error) {
	rc := s.config.Load()
	if rc == nil {
		return Decision{}, errors.New("ratelimitd: no configuration loaded")
	}
	if req.Domain == "" {
		return Decision{}, badRequest("domain must not be empty")
	}
	if len(req.Descriptors) == 0 {
		return Decision{}, badRequest("descriptors must not be empty")
	}
	dec := Decision{Code: CodeOK, Statuses: make([]Status, len(req.Descriptors)), Reason: ratelimit.ReasonQuota}
	dr := rc.domains[req.Domain]
	if dr == nil {
		// An unknown domain has no limits: everything is OK, as in
		// envoyproxy/ratelimit.
		for i := range dec.Statuses {
			dec.Statuses[i] = Status{Code: CodeOK, Remaining: math.MaxUint32}
		}
		s.metrics.unknownDomain()
		return dec, nil
	}
	plans, err := s.plan(dr, req)
	if err != nil {
		return Decision{}, err
	}
	var enforced, shadow []int
	for i, p := range plans {
		st := &dec.Statuses[i]
		st.Rule, st.Multiplier = p.rule, p.multiplier
		switch p.kind {
		case planNone, planUnlimited:
			st.Code, st.Remaining = CodeOK, math.MaxUint32
		case planDeny:
			st.Code, st.Limited = CodeOverLimit, true
			st.Reset = p.charge.Limit.Per
			st.Result = ratelimit.Result{Limit: p.charge.Limit, RetryAfter: p.charge.Limit.Per}
			dec.Code = CodeOverLimit
		case planCharge:
			enforced = append(enforced, i)
		case planShadow:
			shadow = append(shadow, i)
		}
	}
	if len(enforced) > ratelimit.MaxQuotas {
		return Decision{}, badRequest("%d descriptors with a limit, at most %d per request", len(enforced), ratelimit.MaxQuotas)
	}
	if mode == ModeReset {
		var charges []ratelimit.Charge
		for _, i := range append(enforced, shadow...) {
			charges = append(charges, plans[i].charge)
		}
		if len(charges) > 0 {
			if err := dr.enforce.Reset(ctx, charges...); err != nil {
				return Decision{}, err
			}
		}
		return dec, nil
	}
	if len(enforced) > 0 {
		charges := make([]ratelimit.Charge, len(enforced))
		for j, i := range enforced {
			charges[j] = plans[i].charge
		}
		var res ratelimit.MultiResult
		var err error
		switch {
		case mode == ModePeek || (mode == ModeCheck && dec.Code == CodeOverLimit):
			// A descriptor that can never fit denies the request: the
			// others are reported, not charged (all or nothing).
			res, err = dr.enforce.PeekAll(ctx, charges...)
		case mode == ModeCheck:
			res, err = dr.enforce.AllowAll(ctx, charges...)
		case mode == ModeRefund:
			spent := ratelimit.MultiResult{Result: ratelimit.Result{Allowed: true, Reason: ratelimit.ReasonQuota, Time: spentAt}}
			res, err = dr.enforce.RefundAll(ctx, spent, charges...)
		}
		// A backend error is published on the bus (logs, metrics, spans)
		// and the fail strategy decided res; other errors are the caller's.
		if err != nil && (!errors.Is(err, ratelimit.ErrBackend) || mode == ModeRefund) {
			return Decision{}, err
		}
		dec.Reason = res.Reason
		if mode == ModeCheck && dec.Code == CodeOK {
			dec.DecidedAt = res.Time
			if !res.Allowed {
				dec.Code = CodeOverLimit
			}
		}
		if mode == ModePeek && !res.Allowed {
			dec.Code = CodeOverLimit
		}
		for j, i := range enforced {
			s.fill(&dec.Statuses[i], res.Quotas, j, mode)
		}
	}
	// Shadow descriptors are observed, each on its own: they never deny,
	// so they take no part in the all-or-nothing decision.
	for _, i := range shadow {
		st := &dec.Statuses[i]
		var res ratelimit.MultiResult
		var err error
		switch mode {
		case ModeCheck:
			res, err = dr.shadow.AllowAll(ctx, plans[i].charge)
		case ModePeek:
			res, err = dr.shadow.PeekAll(ctx, plans[i].charge)
		case ModeRefund:
			continue // a shadow spend is not refunded: it was an observation
		}
		if err != nil && !errors.Is(err, ratelimit.ErrBackend) {
			return Decision{}, err
		}
		s.fill(st, res.Quotas, 0, mode)
		st.Shadow = true
		st.Code = CodeOK
	}
	if ctx.Err() != nil && dec.Reason == ratelimit.ReasonCanceled {
		return Decision{}, ctx.Err()
	}
	s.metrics.observe(req.Domain, dec, mode)
	return dec, nil
}

func (s *Service) fill(st *Status, quotas []ratelimit.Result, j int, mode Mode) {
	st.Limited = true
	if j >= len(quotas) {
		st.Code = CodeOK
		return
	}
	r := quotas[j]
	st.Result = r
	st.Code = CodeOK
	if !r.Allowed {
		st.Code = CodeOverLimit
	}
	st.Remaining = uint32(min(max(r.Remaining, 0), math.MaxUint32))
	if !r.Allowed {
		st.Reset = r.RetryAfter
	} else {
		st.Reset = r.ResetAfter
	}
}

// plan matches every descriptor and builds its charge.
func (s *Service) plan(dr *domainRuntime, req Request) ([]plan, error) {
	plans := make([]plan, len(req.Descriptors))
	replaced := map[string]bool{}
	for i, d := range req.Descriptors {
		if len(d.Entries) == 0 {
			return nil, badRequest("descriptor %d has no entries", i)
		}
		for j, e := range d.Entries {
			if e.Key == "" {
				return nil, badRequest("descriptor %d, entry %d: empty key", i, j)
			}
		}
		rule, shared := dr.d.Match(d.Entries)
		p := plan{rule: rule}
		if d.Override != nil {
			// An override applies whether or not the configuration has a
			// limit for the descriptor, as in envoyproxy/ratelimit; it
			// keeps the matched rule's algorithm and name, if any.
			o := d.Override
			if _, ok := unitDuration[o.Unit]; !ok {
				return nil, badRequest("descriptor %d: override unit %q", i, o.Unit)
			}
			mult := max(o.Multiplier, 1)
			r := &Rule{Path: "_override", RequestsPerUnit: o.RequestsPerUnit, Unit: o.Unit, UnitCode: unitCode[o.Unit],
				Algorithm: dr.d.Algorithm, QuotaUnit: "requests"}
			if rule != nil {
				r.Path, r.Name, r.Algorithm, r.Shadow, r.QuotaUnit = rule.Path, rule.Name, rule.Algorithm, rule.Shadow, rule.QuotaUnit
			}
			p.rule, p.multiplier = r, mult
		}
		if p.rule != nil {
			for _, name := range p.rule.Replaces {
				replaced[name] = true
			}
		}
		p.shared = shared
		plans[i] = p
	}
	for i, d := range req.Descriptors {
		p := &plans[i]
		r := p.rule
		switch {
		case r == nil:
			p.kind = planNone
			continue
		case r.Name != "" && replaced[r.Name]:
			p.kind, p.rule = planNone, nil
			continue
		case r.Unlimited:
			p.kind = planUnlimited
			continue
		}
		cost := req.Hits
		if cost == 0 {
			cost = 1
		}
		if d.Hits != nil {
			cost = *d.Hits
		}
		lim := r.Limit()
		if p.multiplier > 1 {
			lim.Per *= time.Duration(p.multiplier)
		}
		// The charge has no Name: rule paths may hold characters a quota
		// name may not; the domain (namespace) is the events' label.
		p.charge = ratelimit.Charge{Identity: identity(d.Entries, p.shared), Limit: lim, Algorithm: r.Algorithm}
		switch {
		case r.RequestsPerUnit == 0:
			p.kind = planDeny
			continue
		case cost > uint64(lim.Capacity()):
			// It could never fit: the descriptor is over the limit (and
			// the request with it) without a Redis call.
			p.kind = planDeny
			continue
		}
		p.charge.Cost = int64(cost)
		if err := r.Algorithm.Validate(lim); err != nil {
			return nil, badRequest("descriptor %d: %v", i, err)
		}
		if r.Shadow {
			p.kind = planShadow
		} else {
			p.kind = planCharge
		}
	}
	return plans, nil
}

// identity is the state's identity for a descriptor's entries: every key
// and value, length-prefixed so that no two descriptors share one (the
// core hashes it; the raw values never reach Redis, logs or metrics). A
// value counted under a share_threshold wildcard is replaced by the
// pattern, so that every matching value shares one limit.
func identity(entries []Entry, shared []string) string {
	b := make([]byte, 0, 64)
	for i, e := range entries {
		v := e.Value
		if shared != nil && shared[i] != "" {
			v = "*" + shared[i]
		}
		b = strconv.AppendInt(b, int64(len(e.Key)), 10)
		b = append(b, ':')
		b = append(b, e.Key...)
		b = strconv.AppendInt(b, int64(len(v)), 10)
		b = append(b, ':')
		b = append(b, v...)
	}
	return string(b)
}
