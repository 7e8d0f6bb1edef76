package httplimit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Limiter is what a Middleware needs from a rate limiter: one decision for
// an identity at a cost. *ratelimit.Limiter implements it; so can any other
// algorithm, a wrapper that adds a local cache, or a fake in tests.
//
// AllowN follows ratelimit.Limiter's contract: a denial is a Result with
// Allowed false and a nil error; a Redis failure is an error wrapping
// ratelimit.ErrBackend together with the Result the fail strategy chose
// (Reason ReasonFailOpen or ReasonFailClosed); any other error is bad input
// (ratelimit.ErrInvalidCost, ratelimit.ErrInvalidIdentity).
type Limiter interface {
	AllowN(ctx context.Context, identity string, cost int64) (ratelimit.Result, error)
}

var _ Limiter = (*ratelimit.Limiter)(nil)

// LimiterFunc adapts a function to a Limiter: a limiter whose AllowN has
// another shape, such as a ratelimit.MultiLimiter (several quotas at once,
// reported under the name of the quota that decided):
//
//	lim := httplimit.LimiterFunc(func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
//		mr, err := multi.AllowN(ctx, id, cost)
//		return mr.Result, err
//	})
type LimiterFunc func(ctx context.Context, identity string, cost int64) (ratelimit.Result, error)

// AllowN calls f(ctx, identity, cost).
func (f LimiterFunc) AllowN(ctx context.Context, identity string, cost int64) (ratelimit.Result, error) {
	return f(ctx, identity, cost)
}

// Decision is what the Middleware decided for a request. Handlers behind
// the Middleware read it with FromContext.
type Decision struct {
	// Policy is the policy name, as in the RateLimit headers: the
	// Middleware's, or the name of the quota that decided (Result.Quota).
	Policy string
	// Cost is the cost that was asked for.
	Cost int64
	// Result is the limiter's decision. Result.Reason tells a quota
	// decision (ReasonQuota, or ReasonShadow when shadow mode let a denied
	// request through) from one the fail strategy made while Redis was
	// failing (ReasonFailOpen, ReasonFailClosed).
	Result ratelimit.Result
	// Err is the backend error when the fail strategy decided, else nil.
	Err error

	// release gives back what the admission holds (a Concurrency lease),
	// once; nil when it holds nothing.
	release func()
}

// Release gives back what the admission holds while the request runs: the
// lease of a Concurrency limiter. Handler calls it when the next handler
// returns; a handler that decided with Admit calls it when its work is
// done (typically deferred). It does nothing for other limiters, and
// nothing the second time.
func (d Decision) Release() {
	if d.release != nil {
		d.release()
	}
}

// holder is a Limiter whose admissions hold capacity while the request
// runs (Concurrency): the Middleware releases it when the handler returns,
// not when the request's context ends, which net/http does as soon as the
// client goes away, while the handler may still be working.
type holder interface {
	hold(ctx context.Context, identity string, cost int64) (res ratelimit.Result, release func(), err error)
}

type ctxKey struct{}

// decisionContext carries a Decision: one allocation where
// context.WithValue and a separate *Decision would take two.
type decisionContext struct {
	context.Context
	d Decision
}

// Value returns the Decision for the package's key, and defers to the
// parent otherwise.
func (c *decisionContext) Value(key any) any {
	if key == (ctxKey{}) {
		return &c.d
	}
	return c.Context.Value(key)
}

// FromContext returns the Decision the Middleware stored in a request's
// context, and whether there was one. With stacked middlewares it is the
// innermost one's.
func FromContext(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(ctxKey{}).(*Decision)
	if !ok {
		return Decision{}, false
	}
	return *d, true
}

// Middleware limits HTTP requests with a Limiter: it finds the request's
// identity (KeyFunc) and cost (CostFunc), asks the limiter, writes the
// rate-limit headers, and either calls the next handler or answers itself:
//
//   - allowed: the next handler runs, with the Decision in the request's
//     context (FromContext) and the headers of the configured HeaderStyle
//     already set;
//   - denied by the quota: 429 Too Many Requests with Retry-After (whole
//     seconds, rounded up), Cache-Control: no-store and an RFC 9457
//     application/problem+json body of type quota-exceeded (see
//     WithDeniedHandler to replace the body);
//   - Redis failing under ratelimit.FailClosed: 503 Service Unavailable
//     with Retry-After and a problem of type temporary-reduced-capacity,
//     not a 429: the client did nothing wrong;
//   - the request's context ended before Redis decided (the client went
//     away, a deadline passed): the same 503, whatever the fail strategy,
//     and the next handler does not run (ratelimit.ReasonCanceled);
//   - denied by the quota in shadow mode (ratelimit.WithShadow): the next
//     handler runs, with the headers saying what the quota would do;
//   - Redis failing under ratelimit.FailOpen: the next handler runs, and
//     no rate-limit header is sent, because the state of the quota is
//     unknown. The Decision in the context says ReasonFailOpen, and the
//     limiter's bus has published the failure for metrics and logs;
//   - no identity, or a cost that cannot be known: the error handler
//     (400 Bad Request by default), the limiter is not asked.
//
// Handler wraps a whole mux (net/http, chi, gorilla: anything taking
// func(http.Handler) http.Handler); wrapping one handler at a time is the
// per-route form, with its own limiter and policy. Admit decides inside a
// handler, for costs known only once the body is read.
//
// A Middleware is immutable and safe for concurrent use.
type Middleware struct {
	lim Limiter
	cfg config
}

// New returns a Middleware deciding with lim. Bad options give an error
// wrapping ratelimit.ErrInvalidOption.
func New(lim Limiter, opts ...Option) (*Middleware, error) {
	if lim == nil || isNilPointer(lim) {
		return nil, fmt.Errorf("%w: httplimit: nil limiter", ratelimit.ErrInvalidOption)
	}
	cfg := defaultConfig()
	if ns, ok := lim.(interface{ Namespace() string }); ok && ns.Namespace() != "" {
		cfg.policy = ns.Namespace()
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	return &Middleware{lim: lim, cfg: cfg}, nil
}

// isNilPointer reports whether v is a typed nil pointer (or func) in an
// interface, such as a (*ratelimit.Limiter)(nil), which would panic on the
// first request.
func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func:
		return rv.IsNil()
	}
	return false
}

// Must is like New but panics on an error; for package-level variables and
// wiring code whose options are constants.
func Must(lim Limiter, opts ...Option) *Middleware {
	m, err := New(lim, opts...)
	if err != nil {
		panic(err)
	}
	return m
}

// Policy returns the policy name the Middleware reports.
func (m *Middleware) Policy() string { return m.cfg.policy }

// Handler returns next wrapped in the limit. Its signature is the
// middleware shape of net/http, chi (r.Use(m.Handler)) and gorilla/mux.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.cfg.exempt != nil && m.cfg.exempt(r) {
			next.ServeHTTP(w, r)
			return
		}
		cost := int64(1)
		if m.cfg.cost != nil {
			var err error
			if cost, err = m.cfg.cost(r); err != nil {
				m.cfg.onError(w, r, err)
				return
			}
		}
		if r, ok := m.Admit(w, r, cost); ok {
			// A Concurrency lease lasts exactly as long as the handler,
			// panics included, whether or not the client is still there.
			defer r.Context().Value(ctxKey{}).(*Decision).Release()
			next.ServeHTTP(w, r)
		}
	})
}

// HandlerFunc is Handler for a function: the per-route form:
//
//	mux.Handle("GET /api", limited.HandlerFunc(api))
func (m *Middleware) HandlerFunc(next http.HandlerFunc) http.Handler { return m.Handler(next) }

// Admit decides for r at cost, without calling the exempt or cost
// functions: for handlers that learn the cost only from the body (the
// tokens of an LLM prompt). It writes the rate-limit headers, and reports
// whether to go on. When it returns false it has written the whole response
// (429, 503 or the error handler's); when true, the returned request
// carries the Decision in its context. With a Concurrency limiter the
// admission holds a lease until the Decision's Release is called:
//
//	r, ok := mw.Admit(w, r, cost)
//	if !ok {
//		return
//	}
//	d, _ := httplimit.FromContext(r.Context())
//	defer d.Release()
func (m *Middleware) Admit(w http.ResponseWriter, r *http.Request, cost int64) (*http.Request, bool) {
	id, err := m.cfg.key(r)
	if err != nil {
		m.cfg.onError(w, r, err)
		return r, false
	}
	var (
		res     ratelimit.Result
		release func()
	)
	ctx := &logContext{r.Context(), m.cfg.policy, r.Pattern}
	if h, ok := m.lim.(holder); ok {
		res, release, err = h.hold(ctx, id, cost)
	} else {
		res, err = m.lim.AllowN(ctx, id, cost)
	}
	if err != nil && !errors.Is(err, ratelimit.ErrBackend) {
		m.cfg.onError(w, r, err) // bad input: a cost above the burst, an over-long identity
		return r, false
	}
	policy := m.policyOf(res)
	r = r.WithContext(&decisionContext{r.Context(), Decision{Policy: policy, Cost: cost, Result: res, Err: err, release: release}})
	h := w.Header()
	// Redis decided (by the quota, in shadow mode, or as the deny cache
	// remembers): the quota's state is known and goes into the headers. The fail strategy decided, or the
	// request's context ended first: it is not.
	redisDecided := res.Reason == ratelimit.ReasonQuota || res.Reason == ratelimit.ReasonShadow || res.Reason == ratelimit.ReasonCached
	if redisDecided {
		var pk []byte
		if m.cfg.pkSecret != nil {
			pk = m.partitionKey(id)
		}
		m.writeHeaders(h, policy, res, pk)
	}
	if res.Allowed {
		return r, true
	}
	retry := m.cfg.unavailableRetry
	if redisDecided {
		retry = max(ceilSeconds(res.RetryAfter), 1)
	}
	h.Set(HeaderRetryAfter, strconv.FormatInt(retry, 10))
	h.Set("Cache-Control", "no-store")
	m.cfg.denied.ServeHTTP(w, r)
	return r, false
}

// policyOf is the policy a decision is reported under: the quota that
// decided, for a limiter of several quotas (Result.Quota, when it can be a
// Structured Field String), else the Middleware's policy name.
func (m *Middleware) policyOf(res ratelimit.Result) string {
	if q := res.Quota; q != "" && len(q) <= 64 && validSFString(q) {
		return q
	}
	return m.cfg.policy
}

// partitionKey is the opaque pk of the RateLimit fields: the first 12
// bytes of HMAC-SHA-256(secret, identity). Without the secret it reveals
// nothing about the identity, while a client can still tell its partitions
// apart.
func (m *Middleware) partitionKey(id string) []byte {
	mac := hmac.New(sha256.New, m.cfg.pkSecret)
	mac.Write([]byte(id))
	return mac.Sum(nil)[:12]
}

type logKey struct{}

// logContext carries the Middleware's policy and the request's route to the
// limiter's subscribers, for LogAttrs, during the decision.
type logContext struct {
	context.Context
	policy, route string
}

// Value returns the logContext for the package's key, and defers to the
// parent otherwise.
func (c *logContext) Value(key any) any {
	if key == (logKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// LogAttrs returns the attributes a Middleware puts in the context of its
// decisions: policy (the Middleware's policy name) and route (the pattern
// net/http's ServeMux matched, such as "GET /api/{id}", when there is one:
// bounded, unlike the path). Pass it to the slog subscriber so that every
// decision's line says which route it was for:
//
//	telemetry.Slog(logger, telemetry.WithContextAttrs(httplimit.LogAttrs))
func LogAttrs(ctx context.Context) []slog.Attr {
	c, ok := ctx.Value(logKey{}).(*logContext)
	if !ok {
		return nil
	}
	if c.route == "" {
		return []slog.Attr{slog.String("policy", c.policy)}
	}
	return []slog.Attr{slog.String("policy", c.policy), slog.String("route", c.route)}
}
