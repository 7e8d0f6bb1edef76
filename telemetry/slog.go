package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	slogmulti "github.com/samber/slog-multi"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// Log messages, one per kind of decision, so that log queries can match on
// them.
const (
	MsgAllowed = "ratelimit allowed"
	MsgBlocked = "ratelimit blocked"
	MsgBackend = "ratelimit backend error"
	// MsgCircuit is the message of a circuit breaker's change of state
	// (see ratelimit.WithBreaker): logged at Warn when it opens, at Info
	// when it goes half-open or closes.
	MsgCircuit = "ratelimit circuit breaker"
	// MsgShadow is the message of a decision shadow mode let through
	// though the limit would have blocked it (ratelimit.WithShadow): logged
	// at the Blocked level, so that a rollout shows what enforcing would
	// block.
	MsgShadow = "ratelimit shadow block"
	// MsgRefund is the message of a Refund (see ratelimit.RefundEvent):
	// logged at the Allowed level (Debug by default), or at the FailOpen
	// level (Warn) when Redis failed and nothing was given back.
	MsgRefund = "ratelimit refund"
)

// Levels are the slog levels Slog logs each kind of decision at.
type Levels struct {
	// Allowed is for decisions Redis allowed (default Debug).
	Allowed slog.Level
	// Blocked is for decisions Redis denied, and for those shadow mode let
	// through though the limit would have denied them (default Info).
	Blocked slog.Level
	// FailOpen is for Redis failures the call was allowed through (default
	// Warn): limiting is off while they last.
	FailOpen slog.Level
	// FailClosed is for Redis failures the call was denied on (default
	// Error): callers are being refused because of the backend.
	FailClosed slog.Level
}

// DefaultLevels are the levels Slog uses unless WithLevels is given.
var DefaultLevels = Levels{Allowed: slog.LevelDebug, Blocked: slog.LevelInfo, FailOpen: slog.LevelWarn, FailClosed: slog.LevelError}

// SlogOption configures Slog.
type SlogOption func(*slogSubscriber)

// WithLevels sets the level of each kind of decision. Every field counts (a
// zero field is slog.LevelInfo): start from DefaultLevels and change what
// you need.
func WithLevels(l Levels) SlogOption { return func(s *slogSubscriber) { s.levels = l } }

// DefaultErrorInterval is how often Slog logs a backend error, at most, for
// each namespace and algorithm, unless WithErrorInterval says otherwise.
const DefaultErrorInterval = time.Second

// WithErrorInterval makes Slog log at most one backend-error line per
// interval for each namespace and algorithm (default DefaultErrorInterval),
// so that an outage under heavy traffic writes a line a second rather than
// one per request: the logs must not become the next outage. The next line
// logged carries "suppressed", the number of lines skipped since the last
// one. An interval of 0 (or less) logs every backend error.
func WithErrorInterval(d time.Duration) SlogOption {
	return func(s *slogSubscriber) { s.errEvery = max(d, 0) }
}

// DefaultBlockInterval is how often Slog logs a blocked decision, at most,
// for each key (identity), unless WithBlockInterval says otherwise.
const DefaultBlockInterval = time.Second

// WithBlockInterval makes Slog log at most one blocked line (MsgBlocked,
// MsgShadow) per interval for each key, so that one client hammering over
// its limit writes a line a second, not one per request (default
// DefaultBlockInterval); the next line of that key carries "suppressed".
// It remembers the keys of the last interval only (at most 10,000; past
// that, blocks are logged unsampled until the oldest keys expire). An
// interval of 0 (or less) logs every blocked decision. Allowed decisions are
// never sampled.
func WithBlockInterval(d time.Duration) SlogOption {
	return func(s *slogSubscriber) { s.blockEvery = max(d, 0) }
}

// WithContextAttrs adds to every line the attributes f finds in the
// decision's context: the route or policy of the request, from the HTTP
// middleware (httplimit.LogAttrs), or the caller's own. f must be fast.
func WithContextAttrs(f func(ctx context.Context) []slog.Attr) SlogOption {
	return func(s *slogSubscriber) { s.ctxAttrs = f }
}

type slogSubscriber struct {
	logger     *slog.Logger
	levels     Levels
	errEvery   time.Duration
	errGates   sync.Map // errGateKey -> *errGate
	blockEvery time.Duration
	blocks     blockGates
	ctxAttrs   func(context.Context) []slog.Attr
	now        func() time.Time // tests move it
}

// maxBlockGates bounds the keys whose blocked lines are sampled.
const maxBlockGates = 10_000

// blockGates lets one blocked line through per interval and key.
type blockGates struct {
	mu    sync.Mutex
	gates map[string]*blockGate
}

type blockGate struct {
	next       int64 // unix ns before which lines are suppressed
	suppressed int64
}

// admit reports whether a blocked line of key may be logged at now, and how
// many were suppressed before it.
func (b *blockGates) admit(key string, now int64, every time.Duration) (suppressed int64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gates == nil {
		b.gates = make(map[string]*blockGate)
	}
	g := b.gates[key]
	if g == nil {
		if len(b.gates) >= maxBlockGates {
			for k, old := range b.gates { // forget keys quiet for an interval
				if now >= old.next {
					delete(b.gates, k)
				}
			}
			if len(b.gates) >= maxBlockGates {
				return 0, true
			}
		}
		g = &blockGate{}
		b.gates[key] = g
	}
	if now < g.next {
		g.suppressed++
		return 0, false
	}
	g.next = now + int64(every)
	suppressed, g.suppressed = g.suppressed, 0
	return suppressed, true
}

type errGateKey struct {
	namespace string
	algorithm ratelimit.Algorithm
}

// errGate lets one backend-error line through per interval.
type errGate struct {
	next       atomic.Int64 // unix ns before which lines are suppressed
	suppressed atomic.Int64
}

// admitError reports whether a backend-error line for the namespace and
// algorithm may be logged now (decisions and refunds share the gate), and
// how many were suppressed before it.
func (s *slogSubscriber) admitError(namespace string, alg ratelimit.Algorithm) (suppressed int64, ok bool) {
	if s.errEvery <= 0 {
		return 0, true
	}
	k := errGateKey{namespace, alg}
	g, found := s.errGates.Load(k)
	if !found {
		g, _ = s.errGates.LoadOrStore(k, new(errGate))
	}
	gate := g.(*errGate)
	now := s.now().UnixNano()
	next := gate.next.Load()
	if now < next || !gate.next.CompareAndSwap(next, now+int64(s.errEvery)) {
		gate.suppressed.Add(1)
		return 0, false
	}
	return gate.suppressed.Swap(0), true
}

// Slog returns a Subscriber that logs every decision to logger, at the
// level of its kind (see Levels), with these attributes: namespace,
// algorithm, key (the hashed Redis key, never the identity), cost,
// allowed, reason, remaining, retry_after and duration (as text with their
// unit, "784ms"), quota (for a MultiLimiter, the quota that decided), shard
// (WithShards), for backend failures error and error_type, and those of
// WithContextAttrs. The logger's handler receives the caller's context, so
// a trace-aware handler can add trace and span ids. Backend errors are
// logged at most once a second per namespace and algorithm (see
// WithErrorInterval), blocked decisions at most once a second per key (see
// WithBlockInterval). The Subscriber also logs circuit breaker changes
// (MsgCircuit) and refunds (MsgRefund).
//
// The key is a SHA-256 of the identity unless the limiter has
// WithIdentityKey: for guessable identities (IP addresses, e-mail
// addresses) a plain hash can be reversed by trying them all, so use an
// identity key when logs leave your trust boundary (the demo server does).
//
// Whether the level is enabled is checked first: a decision at a disabled
// level costs one call to the handler's Enabled and no allocation. A nil
// logger means slog.Default().
func Slog(logger *slog.Logger, opts ...SlogOption) ratelimit.Subscriber {
	if logger == nil {
		logger = slog.Default()
	}
	s := &slogSubscriber{logger: logger, levels: DefaultLevels, errEvery: DefaultErrorInterval, blockEvery: DefaultBlockInterval, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SlogTo returns Slog over several handlers at once, combined with
// slog-multi's Fanout: each handler keeps its own level and format, e.g.
// JSON of every decision to a file and warnings in text to stderr. To send
// decisions to different handlers by level or attribute, build the handler
// with slogmulti.Router and pass it to Slog (see the package example).
func SlogTo(handlers []slog.Handler, opts ...SlogOption) ratelimit.Subscriber {
	return Slog(slog.New(slogmulti.Fanout(handlers...)), opts...)
}

func (s *slogSubscriber) OnDecision(ctx context.Context, e ratelimit.Event) {
	level, msg := s.levels.Allowed, MsgAllowed
	switch {
	case e.Err != nil && e.Result.Allowed:
		level, msg = s.levels.FailOpen, MsgBackend
	case e.Err != nil:
		level, msg = s.levels.FailClosed, MsgBackend
	case !e.Result.Allowed:
		level, msg = s.levels.Blocked, MsgBlocked
	case e.Result.Reason == ratelimit.ReasonShadow:
		level, msg = s.levels.Blocked, MsgShadow
	}
	if !s.logger.Enabled(ctx, level) {
		return
	}
	var suppressed int64
	switch {
	case e.Err != nil:
		var ok bool
		if suppressed, ok = s.admitError(e.Namespace, e.Algorithm); !ok {
			return
		}
	case msg != MsgAllowed && s.blockEvery > 0:
		var ok bool
		if suppressed, ok = s.blocks.admit(e.Key, s.now().UnixNano(), s.blockEvery); !ok {
			return
		}
	}
	attrs := [14]slog.Attr{
		slog.String("namespace", e.Namespace),
		slog.String("algorithm", e.Algorithm.String()),
		slog.String("key", e.Key),
		slog.Int64("cost", e.Cost),
		slog.Bool("allowed", e.Result.Allowed),
		slog.String("reason", e.Result.Reason.String()),
		slog.Int64("remaining", e.Result.Remaining),
		slog.String("retry_after", e.Result.RetryAfter.String()),
		slog.String("duration", e.Duration.String()),
	}
	n := 9
	if e.Result.Quota != "" { // a MultiLimiter's deciding quota: a configured name
		attrs[n] = slog.String("quota", e.Result.Quota)
		n++
	}
	if e.Shard > 0 { // the shard that decided (ratelimit.WithShards)
		attrs[n] = slog.Int("shard", e.Shard)
		n++
	}
	if e.Err != nil {
		attrs[n] = slog.String("error", e.Err.Error())
		attrs[n+1] = slog.String("error_type", ratelimit.ErrorTypeOf(e.Err).String())
		n += 2
	}
	if suppressed > 0 {
		attrs[n] = slog.Int64("suppressed", suppressed)
		n++
	}
	s.log(ctx, level, msg, attrs[:n])
}

// log writes one line, with the context's attributes (WithContextAttrs).
func (s *slogSubscriber) log(ctx context.Context, level slog.Level, msg string, attrs []slog.Attr) {
	if s.ctxAttrs != nil {
		attrs = append(attrs, s.ctxAttrs(ctx)...)
	}
	s.logger.LogAttrs(ctx, level, msg, attrs...)
}

// OnBreakerChange logs a circuit breaker's change of state: at Warn when it
// opens (Redis is skipped, the fail strategy decides every call), at Info
// otherwise, with the namespace, algorithm, from and to states, and for an
// opening the error that caused it.
func (s *slogSubscriber) OnBreakerChange(ctx context.Context, c ratelimit.BreakerChange) {
	level := slog.LevelInfo
	if c.To == ratelimit.BreakerOpen {
		level = slog.LevelWarn
	}
	if !s.logger.Enabled(ctx, level) {
		return
	}
	attrs := [6]slog.Attr{
		slog.String("namespace", c.Namespace),
		slog.String("algorithm", c.Algorithm.String()),
		slog.String("from", c.From.String()),
		slog.String("to", c.To.String()),
	}
	n := 4
	if c.Err != nil {
		attrs[n] = slog.String("error", c.Err.Error())
		attrs[n+1] = slog.String("error_type", ratelimit.ErrorTypeOf(c.Err).String())
		n += 2
	}
	s.log(ctx, level, MsgCircuit, attrs[:n])
}

// OnRefundEvent logs a refund with its namespace, algorithm, key, amount,
// remaining (after the refund) and duration: at the Allowed level, or at
// the FailOpen level with error and error_type when Redis failed, sampled
// like the backend errors of decisions (see WithErrorInterval).
func (s *slogSubscriber) OnRefundEvent(ctx context.Context, r ratelimit.RefundEvent) {
	level := s.levels.Allowed
	if r.Err != nil {
		level = s.levels.FailOpen
	}
	if !s.logger.Enabled(ctx, level) {
		return
	}
	var suppressed int64
	if r.Err != nil {
		var ok bool
		if suppressed, ok = s.admitError(r.Namespace, r.Algorithm); !ok {
			return
		}
	}
	attrs := [10]slog.Attr{
		slog.String("namespace", r.Namespace),
		slog.String("algorithm", r.Algorithm.String()),
		slog.String("key", r.Key),
		slog.Int64("amount", r.Amount),
		slog.Int64("remaining", r.Result.Remaining),
		slog.String("duration", r.Duration.String()),
	}
	n := 6
	if r.Result.Quota != "" {
		attrs[n] = slog.String("quota", r.Result.Quota)
		n++
	}
	if r.Err != nil {
		attrs[n] = slog.String("error", r.Err.Error())
		attrs[n+1] = slog.String("error_type", ratelimit.ErrorTypeOf(r.Err).String())
		n += 2
		if suppressed > 0 {
			attrs[n] = slog.Int64("suppressed", suppressed)
			n++
		}
	}
	s.log(ctx, level, MsgRefund, attrs[:n])
}

var (
	_ ratelimit.BreakerSubscriber = (*slogSubscriber)(nil)
	_ ratelimit.RefundSubscriber  = (*slogSubscriber)(nil)
)
