package ratelimit

import (
	"fmt"
	"time"
)

// FailStrategy says what a Limiter decides when Redis cannot: on connection
// errors, timeouts and error replies. Either way the backend error is returned
// (as a *BackendError) and published on the bus.
type FailStrategy uint8

const (
	// FailOpen allows the call when Redis fails (the default): an outage of
	// the limiter does not become an outage of the service.
	FailOpen FailStrategy = iota
	// FailClosed denies the call when Redis fails: for limits that protect
	// something more expensive than the service's availability.
	FailClosed
)

// String returns "open" or "closed".
func (s FailStrategy) String() string {
	if s == FailClosed {
		return "closed"
	}
	return "open"
}

// Defaults of the options.
const (
	// DefaultNamespace is the key prefix when WithNamespace is not given.
	DefaultNamespace = "ratelimit"
	// DefaultTimeout bounds each Redis call when WithTimeout is not given:
	// about a thousand times a healthy round trip, and short enough that a
	// dead or paused Redis cannot stall a request.
	DefaultTimeout = 100 * time.Millisecond
	// MaxIdentityLen is the longest identity accepted, in bytes. Identities
	// are hashed, so this bounds CPU, not Redis memory.
	MaxIdentityLen = 4096
	// DefaultLeaseTTL is how long a ConcurrencyLimiter's lease lasts unless
	// extended, when WithLeaseTTL is not given.
	DefaultLeaseTTL = 30 * time.Second
	// maxNamespaceLen is the longest namespace accepted, in bytes.
	maxNamespaceLen = 64
)

// An Option configures a Limiter, MultiLimiter, ConcurrencyLimiter or
// Charger at construction. Options are applied in order; a later option
// overrides an earlier one. An option that does not apply to the limiter
// being built is an error, not silently ignored.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	namespace string
	algorithm Algorithm
	algSet    bool // WithAlgorithm was given (the limiters that take none reject it)
	fail      FailStrategy
	timeout   time.Duration
	secret    []byte
	bus       *Bus
	subs      []Subscriber
	shadow    bool
	leaseTTL  time.Duration    // 0: not given (NewConcurrency uses DefaultLeaseTTL)
	now       func() time.Time // tests only: replaces Redis TIME
	breaker   *Breaker         // WithBreaker; nil: none
	// noPipelining sends every call on its own (WithPipelining(false));
	// the zero value, pipelining on, is the default.
	noPipelining bool
	// strictSlots makes a Charger refuse calls across slots
	// (WithStrictSlots).
	strictSlots bool
	denyCache   int // WithDenyCache: most keys remembered; 0: off
	shards      int // WithShards; 0: not given
	shardTries  int // WithShardTries; 0: not given (every shard)
}

func defaultConfig() config {
	return config{namespace: DefaultNamespace, algorithm: TokenBucket, fail: FailOpen, timeout: DefaultTimeout}
}

// constructor names the constructor options are given to: some options
// apply to one only.
type constructor uint8

const (
	forNew constructor = iota
	forMulti
	forConcurrency
	forCharger
)

var constructorNames = [...]string{"New", "NewMulti", "NewConcurrency", "NewCharger"}

// newConfig applies opts to the defaults and checks the options against
// each other and against the constructor they are given to.
func newConfig(ctor constructor, opts []Option) (config, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&cfg); err != nil {
			return config{}, err
		}
	}
	only := func(given bool, option string, to constructor) error {
		if given && ctor != to {
			return fmt.Errorf("%w: %s applies to %s only, not to %s", ErrInvalidOption, option, constructorNames[to], constructorNames[ctor])
		}
		return nil
	}
	for _, err := range []error{
		only(cfg.algSet, "WithAlgorithm", forNew),
		only(cfg.denyCache > 0, "WithDenyCache", forNew),
		only(cfg.shards > 0, "WithShards", forNew),
		only(cfg.shardTries > 0, "WithShardTries", forNew),
		only(cfg.leaseTTL != 0, "WithLeaseTTL", forConcurrency),
		only(cfg.strictSlots, "WithStrictSlots", forCharger),
	} {
		if err != nil {
			return config{}, err
		}
	}
	if cfg.shadow && cfg.fail == FailClosed {
		return config{}, fmt.Errorf("%w: shadow mode always allows, so it cannot be combined with FailClosed", ErrInvalidOption)
	}
	if cfg.shadow && cfg.denyCache > 0 {
		return config{}, fmt.Errorf("%w: shadow mode cannot be combined with WithDenyCache", ErrInvalidOption)
	}
	return cfg, nil
}

// WithNamespace sets the first part of every Redis key and the namespace
// label of every event (default "ratelimit"). It separates limiters that
// share a Redis: "api", "auth", "llm-tokens". It must be 1 to 64 bytes of
// ASCII letters, digits, '_', '-' or '.'; in particular no ':', '{' or '}',
// which would make keys ambiguous or break the Cluster hash tag.
func WithNamespace(namespace string) Option {
	return optionFunc(func(c *config) error {
		if err := validNamespace(namespace); err != nil {
			return err
		}
		c.namespace = namespace
		return nil
	})
}

func validNamespace(ns string) error {
	if ns == "" || len(ns) > maxNamespaceLen {
		return fmt.Errorf("%w: namespace %q must be 1 to %d bytes", ErrInvalidOption, ns, maxNamespaceLen)
	}
	if i, r, bad := badNameRune(ns); bad {
		return fmt.Errorf("%w: namespace %q has %q at byte %d (allowed: ASCII letters, digits, '_', '-', '.')", ErrInvalidOption, ns, r, i)
	}
	return nil
}

// WithAlgorithm selects the algorithm of a Limiter (default TokenBucket): one
// of TokenBucket, SlidingWindow, SlidingLog or FixedWindow (see Algorithm
// for which to choose). Concurrency is rejected: use NewConcurrency.
// NewMulti, NewConcurrency and NewCharger reject this option; a
// MultiLimiter takes an algorithm per Quota, a Charger one per Charge.
func WithAlgorithm(a Algorithm) Option {
	return optionFunc(func(c *config) error {
		if !a.valid() {
			return fmt.Errorf("%w: unknown algorithm %d", ErrInvalidOption, a)
		}
		if a == Concurrency {
			return fmt.Errorf("%w: the concurrency limiter is built by NewConcurrency, not WithAlgorithm", ErrInvalidOption)
		}
		c.algorithm, c.algSet = a, true
		return nil
	})
}

// WithShadow turns on shadow mode, for rolling out a limit: every call is
// decided by Redis and published as usual, and spends what an enforced call
// would spend, but is always allowed. A call the limit would have denied
// returns Allowed true with Reason ReasonShadow, and keeps the Remaining and
// RetryAfter of the denial, so metrics, logs and spans show exactly what
// enforcing the limit would block. It applies to Limiter, MultiLimiter,
// Charger and ConcurrencyLimiter (a lease granted in shadow over capacity
// is not recorded in Redis). It cannot be combined with FailClosed, which
// would deny when Redis fails.
func WithShadow() Option {
	return optionFunc(func(c *config) error {
		c.shadow = true
		return nil
	})
}

// WithLeaseTTL sets how long a lease of a ConcurrencyLimiter lasts unless it
// is extended (default DefaultLeaseTTL): the longest time the capacity of a
// holder that crashed stays taken. It must be a whole number of
// microseconds from a millisecond to about 71 years. New, NewMulti and
// NewCharger reject it.
func WithLeaseTTL(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < time.Millisecond || d%time.Microsecond != 0 || d.Microseconds() > maxWindowUS {
			return fmt.Errorf("%w: lease TTL %v must be a whole number of microseconds, from 1ms to about 71 years", ErrInvalidOption, d)
		}
		c.leaseTTL = d
		return nil
	})
}

// WithStrictSlots makes a Charger refuse, with ErrCrossSlot and before
// anything is decided, a call whose charges lie in several Redis Cluster
// slots (on a Ring: several hash tags), instead of deciding it one slot at
// a time with compensating refunds (the default, see Charger). It changes
// nothing on a single Redis or for a Tagged view. Only NewCharger accepts
// it.
func WithStrictSlots() Option {
	return optionFunc(func(c *config) error {
		c.strictSlots = true
		return nil
	})
}

// WithFailStrategy sets what the limiter decides when Redis fails (default
// FailOpen).
func WithFailStrategy(s FailStrategy) Option {
	return optionFunc(func(c *config) error {
		if s != FailOpen && s != FailClosed {
			return fmt.Errorf("%w: unknown fail strategy %d", ErrInvalidOption, s)
		}
		c.fail = s
		return nil
	})
}

// WithTimeout bounds every Redis call of the limiter (default
// DefaultTimeout). When it passes, the call fails with an ErrorTimeout
// BackendError and the FailStrategy decides. The caller's own context
// deadline still applies when it is earlier. The client's own retries
// (go-redis MaxRetries, 3 by default, and DialerRetries, 5) happen within
// this timeout: against a Redis that refuses connections they use it all
// up, so the failure is reported as a timeout. A client with MaxRetries: -1
// and DialerRetries: 1 fails at once with a connection error instead.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %v must be > 0", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	})
}

// WithIdentityKey makes keys from HMAC-SHA-256(secret, identity) instead of
// SHA-256(identity). Recommended whenever identities are guessable (IP
// addresses, e-mail addresses, sequential user ids): a plain SHA-256 of an
// IPv4 address is reversed by trying all 2^32 of them, an HMAC without the
// secret is not. The secret must be at least 16 bytes; every instance sharing
// a limit must use the same one. The slice is copied.
func WithIdentityKey(secret []byte) Option {
	return optionFunc(func(c *config) error {
		if len(secret) < 16 {
			return fmt.Errorf("%w: identity key is %d bytes, want at least 16", ErrInvalidOption, len(secret))
		}
		c.secret = append([]byte(nil), secret...)
		return nil
	})
}

// WithBus makes the limiter publish its decisions on b, so that several
// limiters share one set of subscribers. By default each limiter has a bus
// of its own, with the subscribers of WithSubscribers.
func WithBus(b *Bus) Option {
	return optionFunc(func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: nil bus", ErrInvalidOption)
		}
		c.bus = b
		return nil
	})
}

// WithSubscribers subscribes subs to the limiter's bus at construction, in
// order. Nil subscribers are ignored; a nil pointer or func of a subscriber
// type, which would panic at the first decision, is an error wrapping
// ErrInvalidOption.
func WithSubscribers(subs ...Subscriber) Option {
	return optionFunc(func(c *config) error {
		for i, s := range subs {
			switch {
			case s == nil:
			case typedNil(s):
				return fmt.Errorf("%w: subscriber %d is a nil %T", ErrInvalidOption, i, s)
			default:
				c.subs = append(c.subs, s)
			}
		}
		return nil
	})
}

// WithPipelining turns pipelined decisions on (the default) or off. On,
// calls that arrive while two round trips are in flight queue, and go to
// Redis together as soon as one returns: the queued decisions as one script
// call per Redis node (per slot on a Cluster). A call that finds nothing
// queued goes out at once, alone; there is no timer. Each call keeps its own
// timeout, cancellation, error, fail-strategy decision and Event. It keeps
// at most two connections of the client busy, and a goroutine only while
// calls are queued. Off, each call is one script call of its own.
func WithPipelining(on bool) Option {
	return optionFunc(func(c *config) error {
		c.noPipelining = !on
		return nil
	})
}

// badNameRune returns the first character of a namespace or quota name that
// is not an ASCII letter, digit, '_', '-' or '.', as a character (not one
// byte of it), with its byte offset.
func badNameRune(name string) (at int, r rune, bad bool) {
	for i, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-' || r == '.') {
			return i, r, true
		}
	}
	return 0, 0, false
}
