package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

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

// decideFunc makes one decision (or one raw command) for key.
type decideFunc func(ctx context.Context, key string) error

// benchCase is one library (or raw command) under test.
type benchCase struct {
	Name  string `json:"name"`  // stable identifier, used by -cases
	Label string `json:"label"` // for tables and the plot
	Note  string `json:"note"`
	// prefix is put before every key the case is given (raw cases only:
	// the libraries prefix keys themselves).
	prefix string
	// setup builds the limiter on rdb; close releases what it started.
	setup func(rdb *redis.Client) (decide decideFunc, close func(), err error)
}

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
		"(the cost of a child span per decision is in README, \"The cost of observability\")",
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

func ours(pipelining bool, subs []subscriberCtor) func(rdb *redis.Client) (decideFunc, func(), error) {
	return func(rdb *redis.Client) (decideFunc, func(), error) {
		opts := []ratelimit.Option{ratelimit.WithNamespace("bench"), ratelimit.WithPipelining(pipelining)}
		var closers []func()
		closeAll := func() {
			for _, c := range closers {
				c()
			}
		}
		for _, s := range subs {
			sub, closeSub, err := s.new()
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("subscriber %s: %w", s.name, err)
			}
			opts = append(opts, ratelimit.WithSubscribers(sub))
			closers = append(closers, closeSub)
		}
		l, err := ratelimit.New(rdb, ratelimit.PerSecond(rate), opts...)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		return func(ctx context.Context, key string) error {
			res, err := l.Allow(ctx, key)
			if err == nil && !res.Allowed {
				return errDenied
			}
			return err
		}, closeAll, nil
	}
}

var errDenied = errors.New("denied (the benchmark's limit is meant never to deny)")

const trivialScript = `return redis.call('INCR', KEYS[1])`

func allCases() []benchCase {
	return []benchCase{
		{Name: "ratelimit", Label: "ratelimit (pipelined)",
			Note:  "this library, token bucket, pipelining on (the default), no subscriber",
			setup: ours(true, nil)},
		{Name: "ratelimit-nopipe", Label: "ratelimit (no pipelining)",
			Note:  "this library, token bucket, WithPipelining(false), no subscriber",
			setup: ours(false, nil)},
		{Name: "ratelimit-telemetry", Label: "ratelimit (pipelined) + telemetry",
			Note:  "as ratelimit, with every telemetry subscriber on (listed below)",
			setup: ours(true, telemetrySubscribers)},
		{Name: "ratelimit-nopipe-telemetry", Label: "ratelimit (no pipelining) + telemetry",
			Note:  "as ratelimit-nopipe, with every telemetry subscriber on",
			setup: ours(false, telemetrySubscribers)},
		{Name: "ratelimit-slog-all", Label: "ratelimit (pipelined) + slog of every decision",
			Note:  "as ratelimit, with the slog subscriber logging every decision at Info (JSON to io.Discard): the cost of formatting a log line per decision",
			setup: ours(true, []subscriberCtor{logEverything})},
		{Name: "redis_rate", Label: "go-redis/redis_rate v10",
			Note: "GCRA, one EVALSHA per call (Limiter.Allow)",
			setup: func(rdb *redis.Client) (decideFunc, func(), error) {
				l := redis_rate.NewLimiter(rdb)
				lim := redis_rate.PerSecond(rate)
				return func(ctx context.Context, key string) error {
					res, err := l.Allow(ctx, key, lim)
					if err == nil && res.Allowed == 0 {
						return errDenied
					}
					return err
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
				return func(ctx context.Context, key string) error {
					c, err := l.Get(ctx, key)
					if err == nil && c.Reached {
						return errDenied
					}
					return err
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
				return func(ctx context.Context, key string) error {
					limited, _, err := l.RateLimitCtx(ctx, key, 1)
					if err == nil && limited {
						return errDenied
					}
					return err
				}, func() {}, nil
			}},
		{Name: "raw-evalsha-tokenbucket", Label: "raw EVALSHA (decide.lua, one token-bucket decision)",
			Note:   "this library's script, one decision per call, sent by hand with go-redis EvalSha (no hashing, no Result): the library's own overhead is the difference",
			prefix: "raw-tb:",
			// one decision (n 1, now 0 = TIME), token bucket (id 1), rate 1
			// unit/µs, 1 unit per token: PerSecond(1e6), as the library sends it
			setup: rawScript(lua.Decide(), rawDecideArgs...)},
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
				return func(ctx context.Context, key string) error {
					return ap.EvalSha(ctx, sha, []string{key}, rawDecideArgs...).Err()
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
				return func(ctx context.Context, key string) error {
					return rdb.Incr(ctx, key).Err()
				}, func() {}, nil
			}},
	}
}

func rawScript(src string, args ...any) func(rdb *redis.Client) (decideFunc, func(), error) {
	return func(rdb *redis.Client) (decideFunc, func(), error) {
		s := redis.NewScript(src)
		if err := s.Load(context.Background(), rdb).Err(); err != nil {
			return nil, nil, err
		}
		sha := s.Hash()
		return func(ctx context.Context, key string) error {
			return rdb.EvalSha(ctx, sha, []string{key}, args...).Err()
		}, func() {}, nil
	}
}

// rawDecideArgs are decide.lua's arguments for one token-bucket decision of
// cost 1 under PerSecond(1e6): n 1, now 0 (Redis TIME), algorithm 1, rate 1
// unit per µs, 1 unit per token, burst rate, cost 1, mode 1 (spend).
var rawDecideArgs = []any{int64(1), int64(0), int64(1), int64(1), int64(1), int64(rate), int64(1), int64(1)}
