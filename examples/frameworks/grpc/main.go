// Command grpc serves gRPC limited per API key (x-api-key metadata) or,
// without one, per peer address, by the interceptors of
// github.com/distributed-rate-limiter/ratelimit-go/grpclimit: five calls a
// minute, then ResourceExhausted with RetryInfo and QuotaFailure details
// and the RateLimit fields as response header metadata. The standard
// health service stands in for your own; server reflection is exempt, so
// that grpcurl can list the services however often it asks:
//
//	go run ./grpc                                # embedded Redis, on 127.0.0.1:50051
//	grpcurl -plaintext -H 'x-api-key: team-a' -v 127.0.0.1:50051 grpc.health.v1.Health/Check
package main

import (
	"flag"
	"log"
	"net"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/distributed-rate-limiter/ratelimit-go/examples/frameworks/internal/redisenv"
	"github.com/distributed-rate-limiter/ratelimit-go/grpclimit"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "listen address")
	flag.Parse()
	rdb, where, closeRedis, err := redisenv.Open()
	if err != nil {
		log.Fatal(err)
	}
	defer closeRedis()
	srv, err := newServer(rdb)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("gRPC on %s (Redis: %s)", ln.Addr(), where)
	log.Fatal(srv.Serve(ln))
}

// [readme grpc]
func newServer(rdb redis.UniversalClient) (*grpc.Server, error) {
	lim, err := ratelimit.New(rdb, ratelimit.PerMinute(5), ratelimit.WithNamespace("api"))
	if err != nil {
		return nil, err
	}
	rl, err := grpclimit.New(lim,
		// An API key when the call has one, else the peer's address: the
		// identities httplimit's KeyByHeader("X-API-Key") and KeyByIP give,
		// so an HTTP front on the same limiter shares the quota.
		grpclimit.WithKey(grpclimit.FirstOf(grpclimit.KeyByMetadata("x-api-key"), grpclimit.KeyByPeer)),
		grpclimit.WithExempt("/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"))
	if err != nil {
		return nil, err
	}

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(rl.Unary()),
		grpc.ChainStreamInterceptor(rl.Stream()))
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer()) // your services here
	reflection.Register(srv)
	return srv, nil
}

// [readme end]
