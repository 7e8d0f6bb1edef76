package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCircuitOpen is the error inside the *BackendError of a call that a
// circuit breaker (WithBreaker) answered without asking Redis: the
// breaker is open, or half-open with its probe in flight. The fail strategy
// decided the call, as for any backend failure; the BackendError's Type is
// ErrorCircuitOpen.
var ErrCircuitOpen = errors.New("ratelimit: circuit breaker open")

// Defaults of BreakerSettings.
const (
	// DefaultBreakerFailures is how many consecutive backend failures open
	// a breaker.
	DefaultBreakerFailures = 5
	// DefaultBreakerCoolDown is how long a breaker stays open before it
	// lets a probe through.
	DefaultBreakerCoolDown = time.Second
)

// BreakerSettings configures a circuit breaker (NewBreaker). The zero value
// is the defaults.
type BreakerSettings struct {
	// Failures is how many consecutive backend failures open the breaker
	// (0 means DefaultBreakerFailures). Only failures that say Redis is
	// unavailable count: timeouts, connection errors, and the error replies
	// BUSY, LOADING, OOM, READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN,
	// NOREPLICAS and MISCONF. Any other reply (a success, a denial, NOPERM,
	// a script error) shows Redis answering, and starts the count again. A
	// call the caller canceled, or whose own deadline came before the
	// backend timeout, counts neither way.
	Failures int
	// CoolDown is how long the breaker stays open before it lets one call
	// through as a probe (0 means DefaultBreakerCoolDown).
	CoolDown time.Duration
}

// BreakerState is the state of a circuit breaker. Its String form is a
// bounded label.
type BreakerState uint8

const (
	// BreakerClosed: calls go to Redis (the normal state).
	BreakerClosed BreakerState = iota
	// BreakerOpen: Redis is skipped; every call is decided by the fail
	// strategy at once, until the cool-down has passed.
	BreakerOpen
	// BreakerHalfOpen: the cool-down has passed and one call, the probe,
	// goes to Redis; the others are decided by the fail strategy at once
	// until it returns. A probe that Redis answers closes the breaker, one
	// that fails opens it for another cool-down.
	BreakerHalfOpen
)

var breakerStateNames = [...]string{"closed", "open", "half_open"}

// String returns "closed", "open" or "half_open".
func (s BreakerState) String() string {
	if int(s) < len(breakerStateNames) {
		return breakerStateNames[s]
	}
	return "unknown"
}

// BreakerChange describes a change of state of a circuit breaker, published
// on the bus of every limiter that uses the breaker, to the subscribers
// that implement BreakerSubscriber.
type BreakerChange struct {
	// Namespace and Algorithm name the limiter the change is published
	// for, as in its Events. A breaker shared by several limiters
	// publishes one BreakerChange per limiter; a MultiLimiter's, one per
	// algorithm of its quotas.
	Namespace string
	Algorithm Algorithm
	// From and To are the states before and after the change.
	From, To BreakerState
	// Err is the backend error of the failure that caused a change to
	// BreakerOpen, else nil.
	Err error
	// At is when the breaker changed state.
	At time.Time
}

// A BreakerSubscriber is a Subscriber that also wants the state changes of
// circuit breakers. The Bus finds it by type assertion, as net/http finds an
// http.Flusher: subscribers that do not implement it see only decisions.
// OnBreakerChange is called synchronously, in order of the changes; like
// OnDecision it must be fast and must not call the limiter. ctx is the
// context of the call that caused the change.
type BreakerSubscriber interface {
	Subscriber
	OnBreakerChange(ctx context.Context, c BreakerChange)
}

// Breaker is a circuit breaker in front of Redis, for one limiter or shared
// by several (WithBreaker). After Failures consecutive backend failures it
// opens: for CoolDown every call skips Redis and is decided at once by its
// limiter's fail strategy, returning a *BackendError of Type
// ErrorCircuitOpen (wrapping ErrCircuitOpen). Then one call goes to Redis as
// a probe: if Redis answers, the breaker closes; if not, it opens for
// another cool-down. Each change of state is published on the limiters'
// buses (see BreakerSubscriber).
//
// It changes how fast calls fail and how much load reaches a failing Redis,
// not what is decided: while Redis is down every decision is the fail
// strategy's either way. For up to a cool-down after Redis recovers, calls
// are still decided by the fail strategy.
//
// Share one Breaker between the limiters on one Redis (or Cluster) so that
// they open together, after Failures failures in all rather than each; on a
// Cluster, a single failed shard opens it only when Failures calls in a row
// go to that shard.
//
// A Breaker is safe for concurrent use. Its zero value is not usable;
// create one with NewBreaker.
type Breaker struct {
	failures int64
	coolDown time.Duration
	now      func() time.Time // time.Now, but for tests

	state atomic.Uint32 // BreakerState
	fails atomic.Int64  // consecutive failures while closed

	mu       sync.Mutex // transitions
	openedAt time.Time  // when it last opened
	probing  bool       // a probe is in flight
	// pubMu keeps changes in order: taken before mu is released, held
	// while the change is published, so that slow subscribers never hold
	// mu.
	pubMu     sync.Mutex
	listeners []breakerListener
}

// breakerListener is one limiter's bus and labels.
type breakerListener struct {
	bus       *Bus
	namespace string
	algorithm Algorithm
}

// NewBreaker returns a closed circuit breaker. Negative settings give an
// error wrapping ErrInvalidOption.
func NewBreaker(s BreakerSettings) (*Breaker, error) {
	if s.Failures < 0 || s.CoolDown < 0 {
		return nil, fmt.Errorf("%w: breaker failures %d and cool-down %v must be >= 0 (0 is the default)", ErrInvalidOption, s.Failures, s.CoolDown)
	}
	if s.Failures == 0 {
		s.Failures = DefaultBreakerFailures
	}
	if s.CoolDown == 0 {
		s.CoolDown = DefaultBreakerCoolDown
	}
	return &Breaker{failures: int64(s.Failures), coolDown: s.CoolDown, now: time.Now}, nil
}

// State returns the breaker's state.
func (b *Breaker) State() BreakerState { return BreakerState(b.state.Load()) }

// attach makes the breaker publish its changes on bus, labelled namespace
// and algorithm. Attaching the same triple twice publishes once.
func (b *Breaker) attach(bus *Bus, namespace string, algorithm Algorithm) {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	l := breakerListener{bus, namespace, algorithm}
	for _, have := range b.listeners {
		if have == l {
			return
		}
	}
	b.listeners = append(b.listeners, l)
}

// allow reports whether a call may go to Redis, and whether it is the
// probe of a half-open breaker.
func (b *Breaker) allow(ctx context.Context) (ok, probe bool) {
	if BreakerState(b.state.Load()) == BreakerClosed {
		return true, false
	}
	b.mu.Lock()
	switch BreakerState(b.state.Load()) {
	case BreakerClosed: // closed meanwhile
		b.mu.Unlock()
		return true, false
	case BreakerOpen:
		now := b.now()
		if now.Sub(b.openedAt) < b.coolDown {
			b.mu.Unlock()
			return false, false
		}
		b.probing = true
		b.transition(ctx, BreakerHalfOpen, nil, now) // unlocks mu
		return true, true
	default: // half-open
		if b.probing {
			b.mu.Unlock()
			return false, false
		}
		// The last probe told nothing (canceled): this call probes.
		b.probing = true
		b.mu.Unlock()
		return true, true
	}
}

// Outcomes of a call, for the breaker.
const (
	outcomeNeutral = iota // told nothing about Redis (canceled by the caller)
	outcomeSuccess        // Redis answered
	outcomeFailure        // Redis is unavailable
)

// record takes the outcome of a call allow let through.
func (b *Breaker) record(ctx context.Context, probe bool, outcome int, err *BackendError) {
	if !probe {
		if BreakerState(b.state.Load()) != BreakerClosed {
			return // a call sent before the breaker opened
		}
		switch outcome {
		case outcomeSuccess:
			if b.fails.Load() != 0 {
				b.fails.Store(0)
			}
		case outcomeFailure:
			if b.fails.Add(1) >= b.failures {
				b.mu.Lock()
				if BreakerState(b.state.Load()) != BreakerClosed {
					b.mu.Unlock()
					return
				}
				now := b.now()
				b.openedAt = now
				b.transition(ctx, BreakerOpen, err, now) // unlocks mu
			}
		}
		return
	}
	b.mu.Lock()
	b.probing = false
	switch outcome {
	case outcomeSuccess:
		b.fails.Store(0)
		b.transition(ctx, BreakerClosed, nil, b.now())
	case outcomeFailure:
		now := b.now()
		b.openedAt = now
		b.transition(ctx, BreakerOpen, err, now)
	default:
		b.mu.Unlock() // still half-open: the next call probes
	}
}

// transition moves the breaker to state to and publishes the change. It is
// called with mu held and releases it, handing the order over to pubMu.
func (b *Breaker) transition(ctx context.Context, to BreakerState, err *BackendError, at time.Time) {
	from := BreakerState(b.state.Load())
	b.state.Store(uint32(to))
	b.pubMu.Lock()
	b.mu.Unlock()
	defer b.pubMu.Unlock()
	c := BreakerChange{From: from, To: to, At: at}
	if err != nil { // keep a nil *BackendError out of the interface
		c.Err = err
	}
	for _, l := range b.listeners {
		c.Namespace, c.Algorithm = l.namespace, l.algorithm
		l.bus.publishBreakerChange(ctx, c)
	}
}

// unavailableCodes are the error replies that say Redis cannot serve now,
// rather than that it refused this call.
var unavailableCodes = map[string]bool{
	"BUSY": true, "LOADING": true, "OOM": true, "READONLY": true, "MASTERDOWN": true,
	"CLUSTERDOWN": true, "TRYAGAIN": true, "NOREPLICAS": true, "MISCONF": true,
}

// breakerOutcome classifies a call's error for the breaker. callerFirst is
// true when the caller's own deadline came before the backend timeout, so
// that a timeout is the caller's, not Redis's.
func breakerOutcome(err *BackendError, callerFirst bool) int {
	if err == nil {
		return outcomeSuccess
	}
	switch err.Type {
	case ErrorConnection:
		return outcomeFailure
	case ErrorTimeout:
		if callerFirst {
			return outcomeNeutral
		}
		return outcomeFailure
	case ErrorScript:
		if unavailableCodes[err.Code] {
			return outcomeFailure
		}
		return outcomeSuccess
	case ErrorCanceled:
		return outcomeNeutral
	}
	return outcomeNeutral
}

// circuitOpen returns the error of a call the breaker answered.
func circuitOpen() *BackendError {
	return &BackendError{Type: ErrorCircuitOpen, Err: ErrCircuitOpen}
}

// WithBreaker puts the circuit breaker b in front of Redis for the limiter
// (a Limiter, MultiLimiter or ConcurrencyLimiter): see Breaker. Pass the
// same Breaker to several limiters to share it. Off by default:
//
//	br, err := ratelimit.NewBreaker(ratelimit.BreakerSettings{}) // 5 failures, 1s cool-down
//	limiter, err := ratelimit.New(rdb, limit, ratelimit.WithBreaker(br))
//
// It fails calls fast during an outage and spares a recovering Redis, at
// the price of a cool-down of fail-strategy decisions after Redis is back
// (docs/reliability.md weighs it).
//
// Every call through the limiter's scripts goes through the breaker:
// decisions, Peek, Refund, BatchAllow, and the Extend and Release of
// leases. Reset (a plain DEL) does not. A decision the open breaker made is
// published as usual with Reason fail_open or fail_closed, an Err of Type
// ErrorCircuitOpen, and a zero Start and Duration (no Redis call was made),
// so metrics tell it from a failed call.
func WithBreaker(b *Breaker) Option {
	return optionFunc(func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: nil breaker", ErrInvalidOption)
		}
		if b.now == nil {
			return fmt.Errorf("%w: a Breaker must come from NewBreaker", ErrInvalidOption)
		}
		c.breaker = b
		return nil
	})
}
