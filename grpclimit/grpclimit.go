package grpclimit

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Limiter is what an Interceptor needs from a rate limiter: one decision
// for an identity at a cost. *ratelimit.Limiter implements it, and so does
// any httplimit.Limiter (the method set is the same).
//
// AllowN follows ratelimit.Limiter's contract: a denial is a Result with
// Allowed false and a nil error; a Redis failure is an error wrapping
// ratelimit.ErrBackend together with the Result the fail strategy chose;
// any other error is bad input.
type Limiter interface {
	AllowN(ctx context.Context, identity string, cost int64) (ratelimit.Result, error)
}

var _ Limiter = (*ratelimit.Limiter)(nil)

// LimiterFunc adapts a function to a Limiter, such as a
// ratelimit.MultiLimiter reported under the quota that decided:
//
//	lim := grpclimit.LimiterFunc(func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
//		mr, err := multi.AllowN(ctx, id, cost)
//		return mr.Result, err
//	})
type LimiterFunc func(ctx context.Context, identity string, cost int64) (ratelimit.Result, error)

// AllowN calls f(ctx, identity, cost).
func (f LimiterFunc) AllowN(ctx context.Context, identity string, cost int64) (ratelimit.Result, error) {
	return f(ctx, identity, cost)
}

// Decision is what the Interceptor decided for a call. Handlers read it
// with FromContext.
type Decision struct {
	// Policy is the policy name, as in the ratelimit metadata: the
	// Interceptor's, or the name of the quota that decided (Result.Quota).
	Policy string
	// Cost is the cost that was asked for.
	Cost int64
	// Result is the limiter's decision; Result.Reason tells a quota
	// decision from one the fail strategy made while Redis was failing.
	Result ratelimit.Result
	// Err is the backend error when the fail strategy decided, else nil.
	Err error
}

type ctxKey struct{}

// FromContext returns the Decision the Interceptor stored in a call's
// context, and whether there was one.
func FromContext(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(ctxKey{}).(*Decision)
	if !ok {
		return Decision{}, false
	}
	return *d, true
}

// Interceptor limits gRPC calls with a Limiter. Unary and Stream return its
// server interceptors; Admit decides from inside a handler.
//
// An Interceptor is immutable and safe for concurrent use.
type Interceptor struct {
	lim Limiter
	cfg config
}

// New returns an Interceptor deciding with lim. Bad options give an error
// wrapping ratelimit.ErrInvalidOption.
func New(lim Limiter, opts ...Option) (*Interceptor, error) {
	if lim == nil || isNil(lim) {
		return nil, invalid("nil limiter")
	}
	cfg := defaultConfig()
	if ns, ok := lim.(interface{ Namespace() string }); ok && ns.Namespace() != "" && validPolicy(ns.Namespace()) {
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
	return &Interceptor{lim: lim, cfg: cfg}, nil
}

// isNil reports whether v is a typed nil pointer or func in an interface,
// such as a (*ratelimit.Limiter)(nil), which would panic on the first call.
func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func:
		return rv.IsNil()
	}
	return false
}

// Must is like New but panics on an error; for wiring code whose options
// are constants.
func Must(lim Limiter, opts ...Option) *Interceptor {
	i, err := New(lim, opts...)
	if err != nil {
		panic(err)
	}
	return i
}

// Policy returns the policy name the Interceptor reports.
func (i *Interceptor) Policy() string { return i.cfg.policy }

// Unary returns the unary server interceptor, for
// grpc.ChainUnaryInterceptor. The CostFunc gets the request message.
func (i *Interceptor) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if i.exempt(info.FullMethod) {
			return handler(ctx, req)
		}
		cost, err := i.cost(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		ctx, err = i.Admit(ctx, cost)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream returns the stream server interceptor, for
// grpc.ChainStreamInterceptor. A stream is decided once, when it opens; its
// CostFunc gets a nil request.
func (i *Interceptor) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if i.exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		cost, err := i.cost(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		ctx, err := i.Admit(ss.Context(), cost)
		if err != nil {
			return err
		}
		return handler(srv, &stream{ServerStream: ss, ctx: ctx})
	}
}

// stream is a ServerStream whose Context carries the Decision.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the stream's context with the Decision in it.
func (s *stream) Context() context.Context { return s.ctx }

func (i *Interceptor) exempt(method string) bool {
	for _, e := range i.cfg.exempt {
		if method == e || (strings.HasSuffix(e, "/") && strings.HasPrefix(method, e)) {
			return true
		}
	}
	return false
}

func (i *Interceptor) cost(ctx context.Context, method string, req any) (int64, error) {
	if i.cfg.cost == nil {
		return 1, nil
	}
	n, err := i.cfg.cost(ctx, method, req)
	if err != nil {
		return 0, badInput(err)
	}
	return n, nil
}

// Admit decides for the call of ctx at cost, without consulting the exempt
// methods or the CostFunc: for a stream handler that charges per message,
// or a handler that learns the cost from the request. It sends the
// rate-limit header metadata while the headers are still unsent (later
// calls cannot change them, and that error is ignored).
//
// It returns ctx with the Decision in it and a nil error when the call may
// go on; otherwise a status error to return from the handler:
// ResourceExhausted, Unavailable, InvalidArgument (or the KeyFunc's own
// status), Canceled or DeadlineExceeded, as the package doc describes.
func (i *Interceptor) Admit(ctx context.Context, cost int64) (context.Context, error) {
	id, err := i.cfg.key(ctx)
	if err != nil {
		return ctx, badInput(err)
	}
	res, err := i.lim.AllowN(ctx, id, cost)
	if err != nil && !errors.Is(err, ratelimit.ErrBackend) {
		return ctx, badInput(err) // a cost above the burst, an over-long identity
	}
	if res.Reason == ratelimit.ReasonCanceled || (err != nil && ctx.Err() != nil) {
		// The caller is gone (the limiter denies such a call, whatever its
		// fail strategy): nobody is there to take an answer, and the
		// status says why rather than blaming the quota or Redis.
		return ctx, canceled(ctx)
	}
	policy := i.policyOf(res)
	ctx = context.WithValue(ctx, ctxKey{}, &Decision{Policy: policy, Cost: cost, Result: res, Err: err})
	// Redis decided (by the quota, or in shadow mode): the quota's state is
	// known and goes into the metadata. The fail strategy decided: it is not.
	redisDecided := res.Reason == ratelimit.ReasonQuota || res.Reason == ratelimit.ReasonShadow
	if redisDecided && i.cfg.headers {
		// An error means the headers were sent already (Admit from a
		// handler) or ctx is not a server call's; neither changes the
		// decision.
		_ = grpc.SetHeader(ctx, i.metadata(policy, res))
	}
	if res.Allowed {
		return ctx, nil
	}
	if !redisDecided {
		return ctx, i.unavailable(ctx)
	}
	return ctx, i.exhausted(policy, cost, res)
}

// policyOf is the policy a decision is reported under: the quota that
// decided, for a limiter of several quotas, else the Interceptor's.
func (i *Interceptor) policyOf(res ratelimit.Result) string {
	if q := res.Quota; q != "" && validPolicy(q) {
		return q
	}
	return i.cfg.policy
}

// exhausted is the status of a call the quota denied.
func (i *Interceptor) exhausted(policy string, cost int64, res ratelimit.Result) error {
	retry := max(res.RetryAfter, 0)
	msg := fmt.Sprintf("ratelimit: quota of policy %q exceeded (cost %d); retry in %v", policy, cost, retry)
	st := status.New(codes.ResourceExhausted, msg)
	withDetails, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			// Subject would be the identity, which is never echoed: it
			// may be an API key.
			QuotaId:     policy,
			QuotaValue:  res.Limit.Capacity(),
			Description: msg,
		}}},
	)
	if err != nil { // cannot happen: both messages marshal
		return st.Err()
	}
	return withDetails.Err()
}

// unavailable is the status of a call the fail strategy denied because
// Redis failed.
func (i *Interceptor) unavailable(ctx context.Context) error {
	if i.cfg.headers {
		_ = grpc.SetHeader(ctx, retryAfterMD(i.cfg.unavailableRetry))
	}
	st := status.New(codes.Unavailable, "ratelimit: the rate limiter cannot decide at the moment; retry later")
	withDetails, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(i.cfg.unavailableRetry)})
	if err != nil {
		return st.Err()
	}
	return withDetails.Err()
}

// canceled is the status of a call whose caller left before the limiter
// decided: Canceled or DeadlineExceeded, as its context says.
func canceled(ctx context.Context) error {
	if ctx.Err() == nil { // a Limiter that reported ReasonCanceled for a context of its own
		return status.Error(codes.Canceled, "ratelimit: the call ended before the limiter decided")
	}
	return status.FromContextError(ctx.Err()).Err()
}

// badInput turns an error from a KeyFunc, a CostFunc or the limiter's
// input checks into a status: its own, when it is one, else
// InvalidArgument with its message (which, for this package's and the
// limiter's errors, never holds the identity).
func badInput(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

// ceilSeconds rounds d up to whole seconds, as Retry-After and the t
// parameter want.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return min(s, maxSFInteger)
}
