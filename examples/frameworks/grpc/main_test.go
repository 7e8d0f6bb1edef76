package main

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/fwtest"
)

var rateLimitRE = regexp.MustCompile(`^"api";r=(\d+);t=(\d+)$`)

// TestGRPC serves the example on a loopback port and calls it with a real
// client: an API key gets five calls with the RateLimit metadata, then
// ResourceExhausted with RetryInfo, QuotaFailure and retry-after; another
// key, and a call without one (keyed by the peer), have quotas of their
// own; reflection, exempt, answers however often it is asked.
func TestGRPC(t *testing.T) {
	fwtest.Both(t, func(t *testing.T, rdb *redis.Client, exact bool) {
		srv, err := newServer(rdb)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() { _ = srv.Serve(ln) })
		defer func() { srv.Stop(); wg.Wait() }()
		conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		health := grpc_health_v1.NewHealthClient(conn)
		base, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		teamA := metadata.AppendToOutgoingContext(base, "x-api-key", "team-a")

		for i := int64(1); i <= 5; i++ {
			var hdr metadata.MD
			if _, err := health.Check(teamA, &grpc_health_v1.HealthCheckRequest{}, grpc.Header(&hdr)); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			pol, rl := hdr.Get("ratelimit-policy"), hdr.Get("ratelimit")
			m := rateLimitRE.FindStringSubmatch(first(rl))
			if first(pol) != `"api";q=5;w=60` || m == nil || m[1] != strconv.FormatInt(5-i, 10) || !fwtest.Near(atoi(m[2]), 12*i, exact) {
				t.Errorf("call %d: ratelimit-policy %q, ratelimit %q; want q=5 w=60, r=%d t≈%d", i, pol, rl, 5-i, 12*i)
			}
		}

		var hdr metadata.MD
		_, err = health.Check(teamA, &grpc_health_v1.HealthCheckRequest{}, grpc.Header(&hdr))
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("call 6: %v, want ResourceExhausted", err)
		}
		var retry *errdetails.RetryInfo
		var quota *errdetails.QuotaFailure
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.RetryInfo:
				retry = d
			case *errdetails.QuotaFailure:
				quota = d
			}
		}
		if retry == nil || !fwtest.Near(int64(retry.GetRetryDelay().AsDuration().Round(time.Second)/time.Second), 12, exact) {
			t.Errorf("RetryInfo %v, want about 12 s", retry)
		}
		if quota == nil || len(quota.GetViolations()) != 1 || quota.GetViolations()[0].GetQuotaId() != "api" {
			t.Errorf("QuotaFailure %v, want one violation of api", quota)
		}
		m := rateLimitRE.FindStringSubmatch(first(hdr.Get("ratelimit")))
		if m == nil || m[1] != "0" || first(hdr.Get("retry-after")) != m[2] || !fwtest.Near(atoi(m[2]), 12, exact) {
			t.Errorf("denied metadata %v, want r=0 and retry-after equal to t, about 12", hdr)
		}

		teamB := metadata.AppendToOutgoingContext(base, "x-api-key", "team-b")
		for name, c := range map[string]context.Context{"team-b": teamB, "no key (the peer)": base} {
			if _, err := health.Check(c, &grpc_health_v1.HealthCheckRequest{}); err != nil {
				t.Errorf("%s: %v, want a quota of its own", name, err)
			}
		}

		refl := reflectionpb.NewServerReflectionClient(conn)
		for i := range 7 {
			s, err := refl.ServerReflectionInfo(teamA)
			if err == nil {
				err = s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			}
			if err == nil {
				_, err = s.Recv()
			}
			if err != nil {
				t.Fatalf("reflection %d (exempt): %v", i, err)
			}
			_ = s.CloseSend()
		}
	})
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
