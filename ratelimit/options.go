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
	// maxNamespaceLen is the longest namespace accepted, in bytes.
	maxNamespaceLen = 64
)

// An Option configures a Limiter at construction. Options are applied in
// order; a later option overrides an earlier one.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	namespace string
	algorithm Algorithm
	fail      FailStrategy
	timeout   time.Duration
	secret    []byte
	bus       *Bus
	subs      []Subscriber
	now       func() time.Time // tests only: replaces Redis TIME
	// noPipelining sends every call on its own (WithPipelining(false));
	// the zero value, pipelining on, is the default.
	noPipelining bool
}

func defaultConfig() config {
	return config{namespace: DefaultNamespace, algorithm: TokenBucket, fail: FailOpen, timeout: DefaultTimeout}
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
	for i := 0; i < len(ns); i++ {
		b := ns[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-' || b == '.') {
			return fmt.Errorf("%w: namespace %q has %q at byte %d (allowed: letters, digits, '_', '-', '.')", ErrInvalidOption, ns, b, i)
		}
	}
	return nil
}

// WithAlgorithm selects the algorithm (default TokenBucket).
func WithAlgorithm(a Algorithm) Option {
	return optionFunc(func(c *config) error {
		if !a.valid() {
			return fmt.Errorf("%w: unknown algorithm %d", ErrInvalidOption, a)
		}
		c.algorithm = a
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
// deadline still applies when it is earlier.
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
// of its own (see Limiter.Bus).
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
// order. Nil subscribers are ignored.
func WithSubscribers(subs ...Subscriber) Option {
	return optionFunc(func(c *config) error {
		for _, s := range subs {
			if s != nil {
				c.subs = append(c.subs, s)
			}
		}
		return nil
	})
}

// WithPipelining turns pipelined decisions on (the default) or off.
//
// With pipelining on, concurrent calls on one Limiter share round trips:
// while a call is in flight, the calls that arrive queue, and go to Redis
// together, as one pipeline of script calls, as soon as a connection is
// free. There is no timer: a call that finds nothing queued and a connection
// free goes out at once, alone, on the caller's goroutine, so a lone caller
// waits no longer than without pipelining; under load, batches grow with the
// queue, and throughput rises while latency falls (see BENCHMARKS.md). The
// limiter keeps at most two connections of the client busy at once.
//
// Each call keeps its own semantics: it returns at its own backend timeout
// (WithTimeout) or when its context ends, whatever its batch does (a call
// sent alone on a client with ContextTimeoutEnabled sees a cancellation at
// its backend timeout, as without pipelining); a failed batch fails each of
// its calls with its own *BackendError and the fail strategy decides; each
// call publishes its own Event.
//
// Goroutines: none while the limiter is idle. A flusher goroutine runs while
// calls are queued and ends when the queue is empty, at the latest at the
// backend deadline of its last batch, so there is nothing to close. go-redis
// hooks (such as redisotel) see one pipeline per batch, run under a context
// of the limiter's own (with the batch's deadline) rather than a caller's.
//
// Turn it off to send each call as one EVALSHA of its own, on the caller's
// goroutine and under the caller's context.
func WithPipelining(on bool) Option {
	return optionFunc(func(c *config) error {
		c.noPipelining = !on
		return nil
	})
}
