package grpclimit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/distributed-rate-limiter/ratelimit-go/grpclimit"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// backend is a Redis for a test: miniredis on a still clock, or a real
// redis-server (whose clock runs, so that a t may be a second short).
type backend struct {
	name string
	open func(t *testing.T) (*redis.Client, *miniredis.Miniredis)
}

var backends = []backend{
	{"miniredis", func(t *testing.T) (*redis.Client, *miniredis.Miniredis) {
		mr := miniredis.RunT(t)
		mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		return client(t, mr.Addr()), mr
	}},
	{"redis", func(t *testing.T) (*redis.Client, *miniredis.Miniredis) {
		return client(t, redistest.Start(t).Addr), nil
	}},
}

func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// both runs f on each backend.
func both(t *testing.T, f func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			rdb, mr := b.open(t)
			f(t, rdb, mr)
		})
	}
}

// newLimiter is a limiter of limit in namespace "api".
func newLimiter(t *testing.T, rdb *redis.Client, limit ratelimit.Limit, opts ...ratelimit.Option) *ratelimit.Limiter {
	t.Helper()
	lim, err := ratelimit.New(rdb, limit, append([]ratelimit.Option{ratelimit.WithNamespace("api")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

// healthService is the service under test: grpc.health.v1.Health, real generated
// code with unary (Check, List) and server-streaming (Watch) methods. Each
// handler counts its runs and reports the Decision it found in the
// trailer "decision".
type healthService struct {
	grpc_health_v1.UnimplementedHealthServer
	calls atomic.Int64
}

func decisionTrailer(ctx context.Context) metadata.MD {
	d, ok := grpclimit.FromContext(ctx)
	if !ok {
		return metadata.Pairs("decision", "none")
	}
	return metadata.Pairs("decision", fmt.Sprintf("%s cost=%d remaining=%d reason=%s", d.Policy, d.Cost, d.Result.Remaining, d.Result.Reason))
}

func (h *healthService) Check(ctx context.Context, _ *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	h.calls.Add(1)
	_ = grpc.SetTrailer(ctx, decisionTrailer(ctx))
	return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
}

func (h *healthService) List(ctx context.Context, _ *grpc_health_v1.HealthListRequest) (*grpc_health_v1.HealthListResponse, error) {
	h.calls.Add(1)
	_ = grpc.SetTrailer(ctx, decisionTrailer(ctx))
	return &grpc_health_v1.HealthListResponse{}, nil
}

func (h *healthService) Watch(_ *grpc_health_v1.HealthCheckRequest, ss grpc.ServerStreamingServer[grpc_health_v1.HealthCheckResponse]) error {
	h.calls.Add(1)
	ss.SetTrailer(decisionTrailer(ss.Context()))
	return ss.Send(&grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING})
}

// serve starts a gRPC server with rl's interceptors (after the outer
// ones) on a loopback port, and returns a client of it and the service.
// Both are stopped when the test ends.
func serve(t *testing.T, rl *grpclimit.Interceptor, outer ...grpc.UnaryServerInterceptor) (grpc_health_v1.HealthClient, *healthService) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(append(outer, rl.Unary())...),
		grpc.ChainStreamInterceptor(rl.Stream()),
	)
	h := &healthService{}
	grpc_health_v1.RegisterHealthServer(srv, h)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return dial(t, ln.Addr().String()), h
}

// dial returns a client of the server at addr, closed when the test ends.
func dial(t *testing.T, addr string) grpc_health_v1.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return grpc_health_v1.NewHealthClient(conn)
}

// ctx is a test context bounded in time, so that a hung call fails the
// test instead of hanging it.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

var (
	policyRE = regexp.MustCompile(`^"([^"]+)";q=(\d+);w=(\d+)$`)
	limitRE  = regexp.MustCompile(`^"([^"]+)";r=(\d+);t=(\d+)$`)
)

// fields is the parsed ratelimit metadata of a response.
type fields struct {
	policy     string
	q, w, r, t int64
	retryAfter int64 // -1 when absent
}

// parseFields reads the draft-11 metadata; ok is false when it is absent.
func parseFields(t *testing.T, md metadata.MD) (f fields, ok bool) {
	t.Helper()
	pol, rl := md.Get(grpclimit.MDRateLimitPolicy), md.Get(grpclimit.MDRateLimit)
	if len(pol) == 0 && len(rl) == 0 {
		return f, false
	}
	if len(pol) != 1 || len(rl) != 1 {
		t.Fatalf("want one ratelimit-policy and one ratelimit, got %q and %q", pol, rl)
	}
	pm, lm := policyRE.FindStringSubmatch(pol[0]), limitRE.FindStringSubmatch(rl[0])
	if pm == nil || lm == nil || pm[1] != lm[1] {
		t.Fatalf("malformed metadata: ratelimit-policy %q, ratelimit %q", pol[0], rl[0])
	}
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	f = fields{policy: pm[1], q: num(pm[2]), w: num(pm[3]), r: num(lm[2]), t: num(lm[3]), retryAfter: -1}
	if ra := md.Get(grpclimit.MDRetryAfter); len(ra) == 1 {
		f.retryAfter = num(ra[0])
	}
	return f, true
}

// near reports whether got is want, or up to slack seconds less (the
// real Redis's clock runs between calls).
func near(got, want, slack int64) bool { return got <= want && got >= want-slack }

// slack is how many seconds a t may be short on a backend.
func slack(mr *miniredis.Miniredis) int64 {
	if mr != nil {
		return 0 // a still clock: exact
	}
	return 5
}

var errFake = errors.New("fake")
