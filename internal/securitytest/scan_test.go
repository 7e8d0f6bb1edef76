package securitytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit/httplimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// Guessable identities, as applications pass them, and the distinctive part
// of each that must appear in no output.
var identities = map[string]string{
	"alice.liddell@example.com":        "alice.liddell",
	"203.0.113.77":                     "203.0.113.77",
	"user-4471-kappa":                  "4471-kappa",
	"sk_live_4eC39HqLyjWDarjtT1zdp7dc": "4eC39HqLyjWD",
}

// What HTTP clients send, and the identities the middleware derives.
const (
	apiKey   = "sk_test_Zq81mxPLw"
	clientIP = "198.51.100.23"
)

var httpIdentities = map[string]string{
	"x-api-key:" + apiKey:    "Zq81mxPLw",
	"ip:" + clientIP + "/32": clientIP,
}

// outputs collects everything the library let out, by source.
type outputs map[string]*strings.Builder

func (o outputs) add(source string, format string, args ...any) {
	b, ok := o[source]
	if !ok {
		b = new(strings.Builder)
		o[source] = b
	}
	fmt.Fprintf(b, format, args...)
	b.WriteByte('\n')
}

// TestNoRawIdentityAnywhere runs decisions on guessable identities through
// every limiter kind (each algorithm, the multi-limit call, the leases) and
// the HTTP middleware, with all subscribers attached to one bus: slog JSON
// at Debug, the Prometheus collector, and the OpenTelemetry subscriber both
// as child spans (under a parent span) and as span events, with an OTel
// meter. Then Redis is stopped and more decisions fail open and closed, so
// that error logs, error spans and 503s are scanned too. Every output is
// scanned for the raw identities: the log lines, every span's name,
// attributes, events and status, the OTel metric points, the Prometheus
// exposition in both the text and the OpenMetrics formats (with exemplars)
// and the gathered protobuf, every HTTP response's headers and body, the
// errors returned, and every key and value in Redis (SCAN, read by TYPE).
// With WithIdentityKey, the plain SHA-256 of an identity must not appear
// either: the HMAC replaces it everywhere.
func TestNoRawIdentityAnywhere(t *testing.T) {
	for _, mode := range []string{"sha256", "hmac"} {
		t.Run(mode, func(t *testing.T) {
			var idOpts []ratelimit.Option
			if mode == "hmac" {
				idOpts = append(idOpts, ratelimit.WithIdentityKey([]byte("a secret of 32 bytes, not in git")))
			}
			out, redisDump, keys := runEverything(t, idOpts)
			out.add("redis", "%s", redisDump)

			needles := map[string]string{}
			for id, part := range identities {
				needles[part] = id
			}
			for id, part := range httpIdentities {
				needles[part] = id
			}
			if mode == "hmac" {
				for id := range identities {
					needles[hexSHA256(id)] = "SHA-256 of " + id
				}
				for id := range httpIdentities {
					needles[hexSHA256(id)] = "SHA-256 of " + id
				}
			}
			sources := make([]string, 0, len(out))
			for s := range out {
				sources = append(sources, s)
			}
			sort.Strings(sources)
			for _, source := range sources {
				text := out[source].String()
				if len(text) < 100 {
					t.Errorf("%s: only %d bytes of output: the scan proves nothing", source, len(text))
				}
				for needle, what := range needles {
					if i := strings.Index(text, needle); i >= 0 {
						t.Errorf("%s holds %q (%s): ...%s...", source, needle, what, text[max(0, i-80):min(len(text), i+80)])
					}
				}
				t.Logf("%s: %d bytes scanned", source, len(text))
			}
			// Positive control: the hashed keys are in the logs and in
			// Redis, so both were really read.
			for _, k := range keys {
				if !strings.Contains(out["slog"].String(), k) || !strings.Contains(redisDump, k) {
					t.Errorf("key %s missing from the logs or from Redis: the scan read the wrong thing", k)
				}
			}
		})
	}
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// runEverything makes the decisions and returns the outputs, the Redis
// dump taken before Redis was stopped, and the Redis keys of the identities
// under the token bucket (for the positive control).
func runEverything(t *testing.T, idOpts []ratelimit.Option) (outputs, string, []string) {
	out := outputs{}
	// go-redis keeps redialling a dead server on a goroutine of its own,
	// which sleeps a second between attempts and ends only then once the
	// client is closed: wait for it (this cleanup runs last).
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	})
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })

	// Subscribers.
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	metrics, err := prom.NewCollector()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	bus := ratelimit.NewBus()
	bus.Subscribe(telemetry.Slog(logger))
	bus.Subscribe(metrics)
	bus.Subscribe(rlotel.NewSubscriber(rlotel.WithTracerProvider(tp), rlotel.WithMeterProvider(mp)))
	bus.Subscribe(rlotel.NewSubscriber(rlotel.WithTracerProvider(tp), rlotel.WithMeterProvider(mp), rlotel.WithSpanEvents(true)))

	// Limiters of every kind, FailOpen and FailClosed.
	base := append([]ratelimit.Option{ratelimit.WithBus(bus), ratelimit.WithTimeout(2 * time.Second)}, idOpts...)
	with := func(ns string, fail ratelimit.FailStrategy, more ...ratelimit.Option) []ratelimit.Option {
		return append(append(append([]ratelimit.Option(nil), base...), ratelimit.WithNamespace(ns), ratelimit.WithFailStrategy(fail)), more...)
	}
	type kind struct {
		name  string
		allow func(ctx context.Context, id string, cost int64) (ratelimit.Result, error)
		other func(ctx context.Context, id string) error // the non-decision calls
	}
	var kinds []kind
	var tokenBucket *ratelimit.Limiter
	for _, fail := range []ratelimit.FailStrategy{ratelimit.FailOpen, ratelimit.FailClosed} {
		for _, alg := range []ratelimit.Algorithm{ratelimit.TokenBucket, ratelimit.SlidingWindow, ratelimit.SlidingLog, ratelimit.FixedWindow} {
			l, err := ratelimit.New(client, ratelimit.PerMinute(2), with("sec-"+fail.String(), fail, ratelimit.WithAlgorithm(alg))...)
			if err != nil {
				t.Fatal(err)
			}
			if alg == ratelimit.TokenBucket && fail == ratelimit.FailOpen {
				tokenBucket = l
			}
			kinds = append(kinds, kind{alg.String() + "/" + fail.String(), l.AllowN, func(ctx context.Context, id string) error {
				if _, err := l.Peek(ctx, id); err != nil {
					return err
				}
				spent, err := l.AllowN(ctx, id, 1)
				if err != nil {
					return err
				}
				_, err = l.Refund(ctx, id, spent, 1)
				return err
			}})
		}
		m, err := ratelimit.NewMulti(client, []ratelimit.Quota{
			{Name: "minute", Limit: ratelimit.PerMinute(2)},
			{Name: "day", Limit: ratelimit.PerDay(100), Algorithm: ratelimit.FixedWindow},
		}, with("sec-multi-"+fail.String(), fail)...)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, kind{"multi/" + fail.String(), func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
			r, err := m.AllowN(ctx, id, cost)
			return r.Result, err
		}, func(ctx context.Context, id string) error {
			_, err := m.Peek(ctx, id)
			return err
		}})
		c, err := ratelimit.NewConcurrency(client, 2, with("sec-conc-"+fail.String(), fail)...)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, kind{"concurrency/" + fail.String(), func(ctx context.Context, id string, cost int64) (ratelimit.Result, error) {
			lease, res, err := c.Acquire(ctx, id, cost)
			if lease != nil {
				if err := lease.Extend(ctx); err != nil && !errors.Is(err, ratelimit.ErrBackend) {
					return res, err
				}
			}
			return res, err // leases stay held: their keys are scanned
		}, func(ctx context.Context, id string) error {
			_, err := c.Peek(ctx, id)
			return err
		}})
	}

	// The middleware, on an API key or the client address, with the pk
	// parameter; one per kind of limiter.
	tracer := tp.Tracer("securitytest")
	ctx, parent := tracer.Start(context.Background(), "request")
	handlers := map[string]http.Handler{}
	for _, k := range kinds {
		mw, err := httplimit.New(httplimit.LimiterFunc(k.allow),
			httplimit.WithKey(httplimit.FirstOf(httplimit.KeyByHeader("X-API-Key"), httplimit.KeyByIP)),
			httplimit.WithPartitionKey([]byte("a partition-key secret")), httplimit.WithPolicyName("api"))
		if err != nil {
			t.Fatal(err)
		}
		handlers[k.name] = mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	}
	serve := func(phase, kind string, hdr ...string) {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api", nil)
		r.RemoteAddr = clientIP + ":4711"
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		handlers[kind].ServeHTTP(w, r)
		out.add("http", "%s %s: %d %v %s", phase, kind, w.Code, w.Header(), w.Body.String())
	}

	decide := func(phase string) {
		for _, k := range kinds {
			for id := range identities {
				for range 3 { // allowed, allowed, denied
					if _, err := k.allow(ctx, id, 1); err != nil {
						out.add("errors", "%s %s: %v", phase, k.name, err)
					}
				}
				if err := k.other(ctx, id); err != nil {
					out.add("errors", "%s %s: %v", phase, k.name, err)
				}
			}
			for range 3 {
				serve(phase, k.name, "X-API-Key", apiKey)
				serve(phase, k.name)
			}
			// Bad requests: the 400 must not echo them either.
			serve(phase, k.name, "X-API-Key", apiKey+strings.Repeat("z", ratelimit.MaxIdentityLen))
		}
	}
	decide("up")
	// The Redis dump, before the outage.
	var dump strings.Builder
	var n int
	var cursor uint64
	for {
		keys, next, err := client.Scan(ctx, cursor, "*", 100).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			n++
			fmt.Fprintf(&dump, "%s %s ", k, client.Type(ctx, k).Val())
			switch client.Type(ctx, k).Val() {
			case "hash":
				fmt.Fprint(&dump, client.HGetAll(ctx, k).Val())
			case "zset":
				fmt.Fprint(&dump, client.ZRangeWithScores(ctx, k, 0, -1).Val())
			case "string":
				fmt.Fprint(&dump, client.Get(ctx, k).Val())
			case "list":
				fmt.Fprint(&dump, client.LRange(ctx, k, 0, -1).Val())
			case "set":
				fmt.Fprint(&dump, client.SMembers(ctx, k).Val())
			default:
				t.Errorf("key %s of unexpected type", k)
			}
			dump.WriteByte('\n')
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	// 4 algorithms (the log has 2 keys), multi (2), leases (2), both fail
	// strategies, 4 identities; plus the middleware's 2 identities.
	if n < 2*(5+2+2)*len(identities) {
		t.Errorf("only %d keys in Redis", n)
	}
	var tbKeys []string
	for id := range identities {
		k, err := tokenBucket.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		tbKeys = append(tbKeys, k)
	}

	srv.Stop()
	decide("down")
	parent.End()

	out.add("slog", "%s", logs.String())
	// Prometheus: the text format, OpenMetrics (exemplars), and the
	// gathered families (native histograms and their exemplars).
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer hs.Close()
	for source, accept := range map[string]string{
		"prometheus text":        "text/plain; version=0.0.4",
		"prometheus openmetrics": "application/openmetrics-text; version=1.0.0",
	} {
		req, _ := http.NewRequest(http.MethodGet, hs.URL, nil)
		req.Header.Set("Accept", accept)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out.add(source, "%s", body)
	}
	if strings.Count(out["prometheus openmetrics"].String(), "trace_id") == 0 {
		t.Error("no exemplar in the OpenMetrics exposition: the scan misses them")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		out.add("prometheus gathered", "%v", mf)
	}
	// OpenTelemetry spans and metrics.
	ended := spans.Ended()
	if len(ended) < 10 {
		t.Errorf("only %d spans", len(ended))
	}
	for _, s := range ended {
		out.add("otel spans", "%s kind=%v status=%v %q attrs=%s", s.Name(), s.SpanKind(), s.Status().Code, s.Status().Description, attrs(s.Attributes()))
		for _, e := range s.Events() {
			out.add("otel spans", "  event %s %s", e.Name, attrs(e.Attributes))
		}
		for _, l := range s.Links() {
			out.add("otel spans", "  link %s", attrs(l.Attributes))
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out.add("otel metrics", "%s %s", m.Name, m.Description)
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out.add("otel metrics", "  %s %d", attrs(p.Attributes.ToSlice()), p.Value)
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					out.add("otel metrics", "  %s %g", attrs(p.Attributes.ToSlice()), p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out.add("otel metrics", "  %s count %d", attrs(p.Attributes.ToSlice()), p.Count)
					for _, e := range p.Exemplars {
						out.add("otel metrics", "    exemplar %s", attrs(e.FilteredAttributes))
					}
				}
			default:
				t.Errorf("metric %s of unexpected type %T", m.Name, m.Data)
			}
		}
	}
	return out, dump.String(), tbKeys
}

func attrs(kvs []attribute.KeyValue) string {
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s ", kv.Key, kv.Value.Emit())
	}
	return b.String()
}
