package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	goredisstore "github.com/throttled/throttled/v2/store/goredisstore.v9"
	ulule "github.com/ulule/limiter/v3"
	ululeredis "github.com/ulule/limiter/v3/drivers/store/redis"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/distributed-rate-limiter/ratelimit-go/lua"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// rate is every limiter's limit: high enough that no case is ever denied,
// so that every library does its full write path on every call.
const rate = 1_000_000

// verdict is how a call was decided.
type verdict uint8

const (
	allowed verdict = iota
	denied          // denied by Redis (or by a fail strategy)
	cached          // denied in-process by the deny cache, without Redis
)

// decideFunc makes one decision (or one raw command) for key. The error is
// the backend's; a denial is a verdict, not an error.
type decideFunc func(ctx context.Context, key string) (verdict, error)

// benchCase is one library (or raw command) under test.
type benchCase struct {
	Name  string `json:"name"`  // stable identifier, used by -cases
	Label string `json:"label"` // for tables and the plot
	Note  string `json:"note"`
	// prefix is put before every key the case is given (raw cases only:
	// the libraries prefix keys themselves).
	prefix string
	// setup builds the limiter on rdb; close releases what it started and
	// leaves rdb open (in the shared setup other cases use it after).
	setup func(rdb *redis.Client) (decide decideFunc, close func(), err error)
	// only, when set, restricts the case to the cells it returns true for
	// (nil: every keys × concurrency cell of the run), so that cases that
	// answer one question do not lengthen the run by a grid.
	only func(keys, conc int) bool
	// abuse, when set, replaces the cell's identities by this mix, and
	// denials are expected (else a denial counts as an error).
	abuse *abuseMix
}

// runsIn reports whether the case has a cell at keys and conc.
func (bc benchCase) runsIn(keys, conc int) bool { return bc.only == nil || bc.only(keys, conc) }

// subscriberCtor builds one telemetry subscriber for the "+telemetry" cases,
// and a function that releases it.
type subscriberCtor struct {
	name string
	new  func() (ratelimit.Subscriber, func(), error)
}

// telemetrySubscribers are the subscribers of the "+ telemetry" cases: every
// subscriber this repository ships, configured as in production (and as
// internal/obsbench's "all three"). When a subscriber package lands, add it
// here; the report lists what ran.
var telemetrySubscribers = []subscriberCtor{
	{"prom: telemetry/prom.NewCollector, registered on a registry of its own",
		func() (ratelimit.Subscriber, func(), error) {
			c, err := prom.NewCollector()
			if err != nil {
				return nil, nil, err
			}
			if err := prometheus.NewRegistry().Register(c); err != nil {
				return nil, nil, err
			}
			return c, func() {}, nil
		}},
	{"otel: telemetry/otel.NewSubscriber on an always-sampling SDK TracerProvider (spans batched to a discarding exporter) " +
		"and an SDK MeterProvider with a manual reader; the callers' contexts hold no span, so it records metrics and makes no span " +
		"(the cost of a child span per decision is in docs/telemetry.md, measured by internal/obsbench)",
		func() (ratelimit.Subscriber, func(), error) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(discardSpans{}))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			sub := otel.NewSubscriber(otel.WithTracerProvider(tp), otel.WithMeterProvider(mp))
			return sub, func() {
				_ = tp.Shutdown(context.Background())
				_ = mp.Shutdown(context.Background())
			}, nil
		}},
	{"slog: telemetry.Slog with its default levels on a JSON handler at Info writing to io.Discard (allowed decisions are Debug, so they cost one Enabled check)",
		func() (ratelimit.Subscriber, func(), error) {
			return telemetry.Slog(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))), func() {}, nil
		}},
}

type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

// logEverything is the worst case of the slog subscriber: every decision
// formatted and written (to io.Discard).
var logEverything = subscriberCtor{"slog, every decision logged at Info", func() (ratelimit.Subscriber, func(), error) {
	lv := slog.LevelInfo
	h := slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: lv})
	return telemetry.Slog(slog.New(h), telemetry.WithLevels(telemetry.Levels{Allowed: lv, Blocked: lv, FailOpen: lv, FailClosed: lv})), func() {}, nil
}}

// ourOpts is one configuration of this library under test.
type ourOpts struct {
	pipelining bool
	subs       []subscriberCtor
	alg        ratelimit.Algorithm
	limit      ratelimit.Limit // zero: PerSecond(rate)
	extra      []ratelimit.Option
}

func ours(o ourOpts) func(rdb *redis.Client) (decideFunc, func(), error) {
	return func(rdb *redis.Client) (decideFunc, func(), error) {
		opts := []ratelimit.Option{ratelimit.WithNamespace("bench"), ratelimit.WithPipelining(o.pipelining), ratelimit.WithAlgorithm(o.alg)}
		opts = append(opts, o.extra...)
		var closers []func()
		closeAll := func() {
			for _, c := range closers {
				c()
			}
		}
		for _, s := range o.subs {
			sub, closeSub, err := s.new()
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("subscriber %s: %w", s.name, err)
			}
			opts = append(opts, ratelimit.WithSubscribers(sub))
			closers = append(closers, closeSub)
		}
		limit := o.limit
		if limit == (ratelimit.Limit{}) {
			limit = ratelimit.PerSecond(rate)
		}
		l, err := ratelimit.New(rdb, limit, opts...)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		return func(ctx context.Context, key string) (verdict, error) {
			res, err := l.Allow(ctx, key)
			return ourVerdict(res), err
		}, closeAll, nil
	}
}

// ourVerdict reads this library's Result.
func ourVerdict(res ratelimit.Result) verdict {
	switch {
	case res.Allowed:
		return allowed
	case res.Reason == ratelimit.ReasonCached:
		return cached
	}
	return denied
}

// denyIf is the verdict of a peer that says whether the call was refused.
func denyIf(refused bool, err error) (verdict, error) {
	if refused {
		return denied, err
	}
	return allowed, err
}

const trivialScript = `return redis.call('INCR', KEYS[1])`

// The cells of the cases that answer one question each: the algorithms'
// Redis cost, and the deny cache under abuse, at 64 callers on 10,000 keys
// (the targets are stated there).
func atTargetCell(keys, conc int) bool { return keys == manyKeys && conc == 64 }

const manyKeys = 10000

func allCases() []benchCase {
	cases := []benchCase{
		{Name: "ratelimit", Label: "ratelimit (pipelined)",
			Note:  "this library, token bucket, pipelining on (the default), no subscriber",
			setup: ours(ourOpts{pipelining: true})},
		{Name: "ratelimit-nopipe", Label: "ratelimit (no pipelining)",
			Note:  "this library, token bucket, WithPipelining(false), no subscriber",
			setup: ours(ourOpts{})},
		{Name: "ratelimit-telemetry", Label: "ratelimit (pipelined) + telemetry",
			Note:  "as ratelimit, with every telemetry subscriber on (listed below)",
			setup: ours(ourOpts{pipelining: true, subs: telemetrySubscribers})},
		{Name: "ratelimit-nopipe-telemetry", Label: "ratelimit (no pipelining) + telemetry",
			Note:  "as ratelimit-nopipe, with every telemetry subscriber on",
			setup: ours(ourOpts{subs: telemetrySubscribers})},
		{Name: "ratelimit-slog-all", Label: "ratelimit (pipelined) + slog of every decision",
			Note:  "as ratelimit, with the slog subscriber logging every decision at Info (JSON to io.Discard): the cost of formatting a log line per decision",
			setup: ours(ourOpts{pipelining: true, subs: []subscriberCtor{logEverything}})},
	}
	// The other algorithms, for their Redis CPU per decision. The token
	// bucket is the "ratelimit" case.
	for _, a := range []ratelimit.Algorithm{ratelimit.SlidingWindow, ratelimit.SlidingLog, ratelimit.FixedWindow} {
		cases = append(cases, benchCase{Name: "ratelimit-" + a.String(), Label: "ratelimit (pipelined), " + a.String(),
			Note: fmt.Sprintf("as ratelimit, with WithAlgorithm(%s): a quota of %s per 1 s window, never reached; only at 64 callers on %s keys",
				a, thousands(rate), thousands(manyKeys)),
			setup: ours(ourOpts{pipelining: true, alg: a}),
			only:  atTargetCell})
	}
	cases = append(cases, abuseCases()...)
	return append(cases, []benchCase{
		{Name: "redis_rate", Label: "go-redis/redis_rate v10",
			Note: "GCRA, one EVALSHA per call (Limiter.Allow)",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				l := redis_rate.NewLimiter(rdb)
				lim := redis_rate.PerSecond(rate)
				return func(ctx context.Context, key string) (verdict, error) {
					res, err := l.Allow(ctx, key, lim)
					return denyIf(err == nil && res.Allowed == 0, err)
				}, func() {}, nil
			}},
		{Name: "ulule", Label: "ulule/limiter v3",
			Note: "fixed window, Redis store, one EVALSHA per call (Limiter.Get)",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				store, err := ululeredis.NewStoreWithOptions(rdb, ulule.StoreOptions{Prefix: "ulule"})
				if err != nil {
					return nil, nil, err
				}
				r, err := ulule.NewRateFromFormatted(fmt.Sprintf("%d-S", rate))
				if err != nil {
					return nil, nil, err
				}
				l := ulule.New(store, r)
				return func(ctx context.Context, key string) (verdict, error) {
					c, err := l.Get(ctx, key)
					return denyIf(err == nil && c.Reached, err)
				}, func() {}, nil
			}},
		{Name: "throttled", Label: "throttled v2",
			Note: "GCRA, go-redis v9 store: a TIME+GET pipeline, then a compare-and-swap script (retried on conflict, up to 10 times)",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				store, err := goredisstore.NewCtx(rdb, "throttled:")
				if err != nil {
					return nil, nil, err
				}
				l, err := throttled.NewGCRARateLimiterCtx(store, throttled.RateQuota{MaxRate: throttled.PerSec(rate), MaxBurst: rate})
				if err != nil {
					return nil, nil, err
				}
				return func(ctx context.Context, key string) (verdict, error) {
					limited, _, err := l.RateLimitCtx(ctx, key, 1)
					return denyIf(err == nil && limited, err)
				}, func() {}, nil
			}},
		{Name: "raw-evalsha-tokenbucket", Label: "raw EVALSHA (decide.lua, one token-bucket decision)",
			Note:   "this library's script, one decision per call, sent by hand with go-redis EvalSha (no hashing, no Result): the library's own overhead is the difference",
			prefix: "raw-tb:",
			// one decision (n 1, now 0 = TIME), token bucket (id 1), rate 1
			// unit/µs, 1 unit per token: PerSecond(1e6), as the library sends it
			setup: rawScript(lua.Decide(), rawDecideArgs...)},
		{Name: "raw-fcall-tokenbucket", Label: "raw FCALL (the functions library, one token-bucket decision)",
			Note:   "this library's decision function (lua.Library: decide.lua as a Redis Functions library), as raw EVALSHA (decide.lua) but with go-redis FCall: what the library sends on Redis 7",
			prefix: "raw-fc:",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				if err := rdb.FunctionLoad(context.Background(), lua.Library()).Err(); err != nil && !strings.Contains(err.Error(), "already exists") {
					return nil, nil, err
				}
				fn := lua.DecideFunction()
				return func(ctx context.Context, key string) (verdict, error) {
					return allowed, rdb.FCall(ctx, fn, []string{key}, rawDecideArgs...).Err()
				}, func() {}, nil
			}},
		{Name: "raw-evalsha-tokenbucket-autopipeline", Label: "raw EVALSHA (decide.lua), go-redis AutoPipeline",
			Note: "as raw EVALSHA (decide.lua), sent through go-redis v9.23's experimental AutoPipeline (blocking face, default options): " +
				"the alternative to this library's own dispatcher",
			prefix: "raw-tb-ap:",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				ap, err := rdb.AutoPipeline()
				if err != nil {
					return nil, nil, err
				}
				s := redis.NewScript(lua.Decide())
				if err := s.Load(context.Background(), rdb).Err(); err != nil {
					return nil, nil, err
				}
				sha := s.Hash()
				return func(ctx context.Context, key string) (verdict, error) {
					return allowed, ap.EvalSha(ctx, sha, []string{key}, rawDecideArgs...).Err()
				}, func() { _ = ap.Close() }, nil
			}},
		{Name: "raw-evalsha", Label: "raw EVALSHA (trivial script)",
			Note:   "EVALSHA of `" + trivialScript + "`: the ceiling of any script-based limiter",
			prefix: "raw-es:",
			setup:  rawScript(trivialScript)},
		{Name: "raw-incr", Label: "raw INCR",
			Note:   "INCR: the ceiling of one round trip per call",
			prefix: "raw-incr:",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				return func(ctx context.Context, key string) (verdict, error) {
					return allowed, rdb.Incr(ctx, key).Err()
				}, func() {}, nil
			}},
	}...)
}

func rawScript(src string, args ...any) func(rdb *redis.Client) (decideFunc, func(), error) {
	return func(rdb *redis.Client) (decideFunc, func(), error) {
		s := redis.NewScript(src)
		if err := s.Load(context.Background(), rdb).Err(); err != nil {
			return nil, nil, err
		}
		sha := s.Hash()
		return func(ctx context.Context, key string) (verdict, error) {
			return allowed, rdb.EvalSha(ctx, sha, []string{key}, args...).Err()
		}, func() {}, nil
	}
}

// rawDecideArgs are decide.lua's arguments for one token-bucket decision of
// cost 1 under PerSecond(1e6): n 1, now 0 (Redis TIME), algorithm 1, rate 1
// unit per µs, 1 unit per token, burst rate, cost 1, mode 1 (spend).
var rawDecideArgs = []any{int64(1), int64(0), int64(1), int64(1), int64(1), int64(rate), int64(1), int64(1)}
