package main

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

const testConfig = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: minute
      requests_per_unit: 5
  - key: path
    value: /login
    rate_limit:
      name: login
      unit: hour
      requests_per_unit: 2
  - key: path
    value: /health
    rate_limit:
      unlimited: true
  - key: tier
    value: free
    descriptors:
      - key: user
        rate_limit:
          name: free_user
          unit: hour
          requests_per_unit: 3
          replaces:
            - name: per_user
  - key: user
    rate_limit:
      name: per_user
      unit: hour
      requests_per_unit: 100
  - key: bucket
    rate_limit:
      unit: second
      requests_per_unit: 1
      algorithm: token_bucket
      burst: 4
  - key: shadow
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
`

func header(resp *rlsv3.RateLimitResponse, key string) string {
	for _, h := range resp.GetResponseHeadersToAdd() {
		if h.GetKey() == key {
			return h.GetValue()
		}
	}
	return ""
}

// TestShouldRateLimit drives the running binary with go-control-plane's
// generated client and checks every field of the request and the reply.
func TestShouldRateLimit(t *testing.T) {
	srv := redistest.Start(t)
	p := startProc(t, "-config", writeConfig(t, map[string]string{"edge.yaml": testConfig}), "-redis", "redis://"+srv.Addr)

	// One descriptor: the reply's fields and the draft-11 headers.
	resp := p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
	st := resp.GetStatuses()[0]
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || st.GetCode() != rlsv3.RateLimitResponse_OK || st.GetLimitRemaining() != 4 {
		t.Fatalf("first call: %v", resp)
	}
	if cl := st.GetCurrentLimit(); cl.GetRequestsPerUnit() != 5 || cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
		t.Fatalf("current_limit %v", cl)
	}
	if d := st.GetDurationUntilReset().AsDuration(); d <= 0 || d > time.Minute {
		t.Fatalf("duration_until_reset %v, want within the minute's window", d)
	}
	if got := header(resp, "RateLimit-Policy"); got != `"remote_address";q=5;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := header(resp, "RateLimit"); !strings.HasPrefix(got, `"remote_address";r=4;t=`) {
		t.Fatalf("RateLimit %q", got)
	}

	// The request's hits_addend charges 3; then 2 more do not fit (1
	// left), and nothing is spent.
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 3, Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetLimitRemaining() != 1 {
		t.Fatalf("hits_addend 3: %v", resp)
	}
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 2, Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || resp.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT ||
		resp.GetStatuses()[0].GetLimitRemaining() != 1 || header(resp, "Retry-After") == "" {
		t.Fatalf("hits_addend 2 over 1 left: %v", resp)
	}
	// A descriptor's own hits_addend wins over the request's: 0 charges
	// nothing, 1 charges the last unit.
	zero := desc("remote_address", "10.0.0.1")
	zero.HitsAddend = wrapperspb.UInt64(0)
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 5, Descriptors: []*rlv3.RateLimitDescriptor{zero}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetLimitRemaining() != 1 {
		t.Fatalf("descriptor hits_addend 0: %v", resp)
	}
	one := desc("remote_address", "10.0.0.1")
	one.HitsAddend = wrapperspb.UInt64(1)
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 5, Descriptors: []*rlv3.RateLimitDescriptor{one}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Fatalf("descriptor hits_addend 1: %v", resp)
	}

	// A limit override replaces the configured limit for the call.
	over := desc("remote_address", "10.0.0.2")
	over.Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 2, Unit: typev3.RateLimitUnit_HOUR}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{over}})
		st := resp.GetStatuses()[0]
		if st.GetCode() != want || st.GetCurrentLimit().GetRequestsPerUnit() != 2 || st.GetCurrentLimit().GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR {
			t.Fatalf("override, call %d: %v", i, resp)
		}
	}

	// Unlimited, no match, an unknown domain: OK with no limit.
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("path", "/health"), desc("nothing", "x")}})
	for i, st := range resp.GetStatuses() {
		if st.GetCode() != rlsv3.RateLimitResponse_OK || st.GetCurrentLimit() != nil || st.GetLimitRemaining() != math.MaxUint32 {
			t.Fatalf("unlimited / unmatched %d: %v", i, st)
		}
	}
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "1")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("unknown domain: %v", resp)
	}

	// Nested descriptors and replaces: with [tier=free, user] present, the
	// per_user limit of [user] is replaced by free_user's.
	for i := range 4 {
		resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("tier", "free", "user", "u1"), desc("user", "u1")}})
		if got := resp.GetStatuses()[1]; got.GetCurrentLimit() != nil {
			t.Fatalf("per_user not replaced: %v", got)
		}
		if got := resp.GetStatuses()[0].GetCurrentLimit().GetName(); got != "free_user" {
			t.Fatalf("nested match: %q", got)
		}
		want := rlsv3.RateLimitResponse_OK
		if i == 3 {
			want = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		if resp.GetOverallCode() != want {
			t.Fatalf("free_user call %d: %v", i, resp.GetOverallCode())
		}
	}

	// Token bucket with a burst (extensions): 4 at once, not 5.
	resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 4, Descriptors: []*rlv3.RateLimitDescriptor{desc("bucket", "b")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || header(resp, "RateLimit-Policy") != `"bucket";q=4;w=4` {
		t.Fatalf("burst 4: %v", resp)
	}
	// Shadow mode: counted, never enforced.
	for range 3 {
		resp = p.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("shadow", "s")}})
		if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("shadow: %v", resp)
		}
	}
	if got := metric(t, p.httpURL, `ratelimitd_descriptor_decisions_total{code="shadow_over_limit",descriptor="shadow",domain="edge"}`); got != "2" {
		t.Fatalf("shadow over-limit count %q, want 2", got)
	}

	// Bad requests: InvalidArgument.
	ctx := context.Background()
	if _, err := p.client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge"}); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("no descriptors: %v", err)
	}

	// Health and reflection.
	h, err := healthpb.NewHealthClient(p.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ratelimit.v3.RateLimitService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", h, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(p.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := stream.Recv()
	if err != nil || !strings.Contains(rr.String(), "envoy.service.ratelimit.v3.RateLimitService") {
		t.Fatalf("reflection: %v, %v", rr, err)
	}
	_ = stream.CloseSend()

	// The legacy header trio, by flag.
	q := startProc(t, "-config", writeConfig(t, map[string]string{"edge.yaml": testConfig}), "-redis", "redis://"+srv.Addr, "-headers", "x-ratelimit")
	resp = q.should(t, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{desc("remote_address", "10.0.0.9")}})
	if header(resp, "X-RateLimit-Limit") != "5" || header(resp, "X-RateLimit-Remaining") != "4" || header(resp, "RateLimit") != "" {
		t.Fatalf("x-ratelimit headers: %v", resp.GetResponseHeadersToAdd())
	}
}

// TestAtomicDescriptors: one over-limit descriptor denies the whole
// request, and nothing is spent on the others (envoyproxy/ratelimit spends
// on every descriptor, its issue #1060).
func TestAtomicDescriptors(t *testing.T) {
	srv := redistest.Start(t)
	p := startProc(t, "-config", writeConfig(t, map[string]string{"edge.yaml": testConfig}), "-redis", "redis://"+srv.Addr)
	both := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{
		desc("remote_address", "10.1.1.1"), desc("path", "/login"), desc("user", "bob")}}
	for i := range 2 {
		if resp := p.should(t, both); resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("call %d: %v", i, resp)
		}
	}
	for i := range 3 {
		resp := p.should(t, both)
		if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("denied call %d: %v", i, resp)
		}
		s := resp.GetStatuses()
		if s[0].GetCode() != rlsv3.RateLimitResponse_OK || s[1].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT || s[2].GetCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("denied call %d statuses: %v", i, s)
		}
		if s[0].GetLimitRemaining() != 3 || s[2].GetLimitRemaining() != 98 {
			t.Fatalf("denied call %d spent on the others: remote_address %d left, user %d left; want 3 and 98",
				i, s[0].GetLimitRemaining(), s[2].GetLimitRemaining())
		}
	}
	// A peek shows the same: the denied calls spent nothing.
	var out restResponse
	post(t, p.httpURL+"/v1/peek", map[string]any{"domain": "edge", "descriptors": []any{
		map[string]any{"entries": []any{map[string]string{"key": "remote_address", "value": "10.1.1.1"}}},
		map[string]any{"entries": []any{map[string]string{"key": "user", "value": "bob"}}},
	}}, &out)
	if *out.Descriptors[0].Remaining != 3 || *out.Descriptors[1].Remaining != 98 {
		t.Fatalf("peek after the denials: %+v", out)
	}
}
