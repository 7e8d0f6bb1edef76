package httplimit

import (
	"fmt"
	"net/http"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// DefaultPolicy is the policy name when WithPolicyName is not given and the
// limiter has no namespace.
const DefaultPolicy = "default"

// DefaultUnavailableRetryAfter is the Retry-After of a 503 when Redis fails
// under ratelimit.FailClosed, unless WithUnavailableRetryAfter is given.
const DefaultUnavailableRetryAfter = time.Second

// An Option configures a Middleware at construction.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	key              KeyFunc
	cost             CostFunc
	exempt           func(*http.Request) bool
	style            HeaderStyle
	policy           string
	unit             string
	pkSecret         []byte
	denied           http.Handler
	onError          func(http.ResponseWriter, *http.Request, error)
	unavailableRetry int64 // seconds
}

func defaultConfig() config {
	return config{
		key:              KeyByIP,
		style:            StyleDraft11,
		policy:           DefaultPolicy,
		denied:           http.HandlerFunc(DefaultDeniedHandler),
		onError:          DefaultErrorHandler,
		unavailableRetry: ceilSeconds(DefaultUnavailableRetryAfter),
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: httplimit: "+format, append([]any{ratelimit.ErrInvalidOption}, args...)...)
}

// WithKey sets how a request's identity is found (default KeyByIP: the
// socket address, no header trusted). See ClientIP, KeyByHeader and
// FirstOf.
func WithKey(key KeyFunc) Option {
	return optionFunc(func(c *config) error {
		if key == nil {
			return invalid("nil key function")
		}
		c.key = key
		return nil
	})
}

// WithCost sets how much a request costs (default 1 per request): its
// size (CostByContentLength), the tokens it declares (CostByQuery), or any
// function of the request.
func WithCost(cost CostFunc) Option {
	return optionFunc(func(c *config) error {
		if cost == nil {
			return invalid("nil cost function")
		}
		c.cost = cost
		return nil
	})
}

// WithExempt lets requests for which exempt returns true through without
// asking the limiter and without rate-limit headers: health checks,
// metrics scrapes, internal callers. It is not consulted by Admit.
func WithExempt(exempt func(*http.Request) bool) Option {
	return optionFunc(func(c *config) error {
		c.exempt = exempt
		return nil
	})
}

// WithHeaderStyle selects the rate-limit header fields (default
// StyleDraft11).
func WithHeaderStyle(s HeaderStyle) Option {
	return optionFunc(func(c *config) error {
		if int(s) >= len(styleNames) {
			return invalid("unknown header style %d", s)
		}
		c.style = s
		return nil
	})
}

// WithPolicyName names the policy in the RateLimit fields and in the
// violated-policies of a 429 body (default: the limiter's namespace when it
// has a Namespace method, else "default"). It must be 1 to 64 printable
// ASCII characters.
func WithPolicyName(name string) Option {
	return optionFunc(func(c *config) error {
		if name == "" || len(name) > 64 || !validSFString(name) {
			return invalid("policy name %q must be 1 to 64 printable ASCII characters", name)
		}
		c.policy = name
		return nil
	})
}

// WithQuotaUnit sets the qu parameter of RateLimit-Policy: "requests" (the
// draft's default, then not sent), "content-bytes" (with
// CostByContentLength) or "concurrent-requests". A cost in other units,
// such as LLM tokens, is best left at the default with the unit documented
// by the API, or named with a vendor-specific value.
func WithQuotaUnit(unit string) Option {
	return optionFunc(func(c *config) error {
		if len(unit) > 64 || !validSFString(unit) {
			return invalid("quota unit %q must be at most 64 printable ASCII characters", unit)
		}
		if unit == "requests" {
			unit = ""
		}
		c.unit = unit
		return nil
	})
}

// WithPartitionKey adds the pk parameter to the draft-11 fields: the first
// 12 bytes of HMAC-SHA-256(secret, identity), so that a client can tell
// which of its partitions a response speaks of while the identity (an IP
// address, a user id) cannot be recovered from it. secret must be at least
// 16 bytes; the slice is copied. Without this option no pk is sent.
func WithPartitionKey(secret []byte) Option {
	return optionFunc(func(c *config) error {
		if len(secret) < 16 {
			return invalid("partition key secret is %d bytes, want at least 16", len(secret))
		}
		c.pkSecret = append([]byte(nil), secret...)
		return nil
	})
}

// WithDeniedHandler replaces the response to a denied request (default
// DefaultDeniedHandler). When h runs, the rate-limit headers, Retry-After
// and Cache-Control: no-store are already set, and FromContext returns the
// Decision: Result.Reason is ratelimit.ReasonQuota for a denial by the quota
// (answer 429) and ratelimit.ReasonFailClosed for a Redis failure (answer
// 503). To change only one case, call DefaultDeniedHandler for the other.
func WithDeniedHandler(h http.Handler) Option {
	return optionFunc(func(c *config) error {
		if h == nil {
			return invalid("nil denied handler")
		}
		c.denied = h
		return nil
	})
}

// WithErrorHandler replaces the response to a request that cannot be
// decided (default DefaultErrorHandler, a 400): the KeyFunc or CostFunc
// failed (errors wrapping ErrNoIdentity or ErrInvalidCost, or the
// function's own), or the limiter rejected the input (a cost above the
// burst: ratelimit.ErrInvalidCost; an over-long identity:
// ratelimit.ErrInvalidIdentity). To let such requests through instead,
// limited by another identity, make the KeyFunc fall back (FirstOf).
func WithErrorHandler(h func(w http.ResponseWriter, r *http.Request, err error)) Option {
	return optionFunc(func(c *config) error {
		if h == nil {
			return invalid("nil error handler")
		}
		c.onError = h
		return nil
	})
}

// WithUnavailableRetryAfter sets the Retry-After of the 503 sent when Redis
// fails under ratelimit.FailClosed (default 1s), rounded up to whole
// seconds.
func WithUnavailableRetryAfter(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return invalid("unavailable Retry-After %v must be > 0", d)
		}
		c.unavailableRetry = ceilSeconds(d)
		return nil
	})
}
