package grpclimit_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/distributed-rate-limiter/ratelimit-go/grpclimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// A gRPC server limited per API key (x-api-key metadata, else the peer
// address): two calls a minute, then ResourceExhausted with a RetryInfo and
// a QuotaFailure naming the policy.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) // a still clock, for stable output
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(2), ratelimit.WithNamespace("api"))
	if err != nil {
		panic(err)
	}
	rl, err := grpclimit.New(lim,
		grpclimit.WithKey(grpclimit.FirstOf(grpclimit.KeyByMetadata("x-api-key"), grpclimit.KeyByPeer)))
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(rl.Unary()),
		grpc.ChainStreamInterceptor(rl.Stream()))
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()

	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := grpc_health_v1.NewHealthClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", "team-a")

	for range 3 {
		var hdr metadata.MD
		_, err := client.Check(ctx, &grpc_health_v1.HealthCheckRequest{}, grpc.Header(&hdr))
		st := status.Convert(err)
		fmt.Println(st.Code(), hdr.Get("ratelimit-policy"), hdr.Get("ratelimit"), hdr.Get("retry-after"))
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.RetryInfo:
				fmt.Println("  retry in", d.GetRetryDelay().AsDuration())
			case *errdetails.QuotaFailure:
				fmt.Println("  quota", d.GetViolations()[0].GetQuotaId(), d.GetViolations()[0].GetQuotaValue())
			}
		}
	}
	// Output:
	// OK ["api";q=2;w=60] ["api";r=1;t=30] []
	// OK ["api";q=2;w=60] ["api";r=0;t=60] []
	// ResourceExhausted ["api";q=2;w=60] ["api";r=0;t=30] [30]
	//   retry in 30s
	//   quota api 2
}
