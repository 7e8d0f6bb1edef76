package grpclimit

import (
	"fmt"
	"strings"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// DefaultPolicy is the policy name when WithPolicyName is not given and the
// limiter has no namespace.
const DefaultPolicy = "default"

// DefaultUnavailableRetryAfter is the RetryInfo delay of an Unavailable
// answer when Redis fails under ratelimit.FailClosed, unless
// WithUnavailableRetryAfter is given.
const DefaultUnavailableRetryAfter = time.Second

// An Option configures an Interceptor at construction.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	key              KeyFunc
	cost             CostFunc
	exempt           []string
	policy           string
	headers          bool
	unavailableRetry time.Duration
}

func defaultConfig() config {
	return config{
		key:              KeyByPeer,
		policy:           DefaultPolicy,
		headers:          true,
		unavailableRetry: DefaultUnavailableRetryAfter,
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: grpclimit: "+format, append([]any{ratelimit.ErrInvalidOption}, args...)...)
}

// WithKey sets how a call's identity is found (default KeyByPeer: the
// connection's peer address). See KeyByMetadata and FirstOf.
func WithKey(key KeyFunc) Option {
	return optionFunc(func(c *config) error {
		if key == nil {
			return invalid("nil key function")
		}
		c.key = key
		return nil
	})
}

// WithCost sets how much a call costs (default 1 per call, and per stream).
func WithCost(cost CostFunc) Option {
	return optionFunc(func(c *config) error {
		if cost == nil {
			return invalid("nil cost function")
		}
		c.cost = cost
		return nil
	})
}

// WithExempt lets calls of the given methods through without asking the
// limiter and without rate-limit metadata: health checks, reflection,
// internal callers. Each entry is a full method name
// ("/grpc.health.v1.Health/Check"), or a service name ending in '/'
// ("/grpc.health.v1.Health/") for all of its methods. Entries add up over
// several WithExempt options.
func WithExempt(methods ...string) Option {
	return optionFunc(func(c *config) error {
		for _, m := range methods {
			if !strings.HasPrefix(m, "/") || len(m) < 2 {
				return invalid("exempt method %q must be a full method name (/package.Service/Method) or a service (/package.Service/)", m)
			}
		}
		c.exempt = append(c.exempt, methods...)
		return nil
	})
}

// WithPolicyName names the policy in the ratelimit metadata and in the
// QuotaFailure of a denial (default: the limiter's namespace when it has a
// Namespace method, else "default"). It must be 1 to 64 printable ASCII
// characters.
func WithPolicyName(name string) Option {
	return optionFunc(func(c *config) error {
		if !validPolicy(name) {
			return invalid("policy name %q must be 1 to 64 printable ASCII characters", name)
		}
		c.policy = name
		return nil
	})
}

// WithHeaderMetadata turns the response header metadata (ratelimit-policy,
// ratelimit, retry-after) on or off (default on).
func WithHeaderMetadata(on bool) Option {
	return optionFunc(func(c *config) error {
		c.headers = on
		return nil
	})
}

// WithUnavailableRetryAfter sets the RetryInfo delay of the Unavailable
// answer sent when Redis fails under ratelimit.FailClosed (default 1s).
func WithUnavailableRetryAfter(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return invalid("unavailable retry delay %v must be > 0", d)
		}
		c.unavailableRetry = d
		return nil
	})
}
