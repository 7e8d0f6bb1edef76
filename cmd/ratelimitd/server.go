package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry"
	rlotel "github.com/distributed-rate-limiter/ratelimit-go/telemetry/otel"
	"github.com/distributed-rate-limiter/ratelimit-go/telemetry/prom"
)

// server is a started ratelimitd.
type server struct {
	svc      *Service
	httpURL  string
	grpcAddr string
	httpSrv  *http.Server
	grpcSrv  *grpc.Server
	health   *health.Server
	serveErr chan error
	logger   *slog.Logger
	reloader *reloader
	closers  []func(context.Context) error
	out      io.Writer
}

// start connects to Redis, loads the configuration, wires telemetry and
// starts both listeners and the reloader. tp, when not nil, replaces the
// tracer provider the environment would choose (tests use an in-memory
// one).
func start(ctx context.Context, o options, hup <-chan os.Signal, tp trace.TracerProvider, out, logOut io.Writer) (s *server, err error) {
	s = &server{serveErr: make(chan error, 2), out: out}
	built := s
	defer func() {
		if err != nil {
			_ = built.closeAll(context.Background())
		}
	}()
	s.logger = slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: o.logLevel}))

	rdb, where, closeRedis, err := connect(o)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, closeRedis)

	if tp == nil {
		var stopTracing func(context.Context) error
		tp, stopTracing, err = setupTracing(ctx, os.Getenv)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, stopTracing) // flushes queued spans
	}

	// The library's telemetry, as any user wires it: decisions logged,
	// counted (namespace = domain) and traced (a child span of the gRPC or
	// HTTP server span).
	metrics, err := prom.NewCollector()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sm := newServiceMetrics()
	sm.register(reg)
	bus := ratelimit.NewBus()
	bus.Subscribe(telemetry.Slog(s.logger))
	bus.Subscribe(metrics)
	bus.Subscribe(rlotel.NewSubscriber(rlotel.WithTracerProvider(tp)))

	var br *ratelimit.Breaker
	if o.breaker {
		if br, err = ratelimit.NewBreaker(ratelimit.BreakerSettings{}); err != nil {
			return nil, err
		}
	}
	s.svc = newService(rdb, bus, br, o.redisTimeout, s.logger, sm)
	s.svc.identityKey = o.identityKey

	s.reloader = newReloader(s.svc, o.configPath, s.logger, sm)
	if err := s.reloader.initial(); err != nil {
		return nil, err
	}

	// gRPC: the rate limit service, health and reflection, with server
	// spans (otelgrpc) whose children are the decisions' spans.
	s.grpcSrv = grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagators()))))
	rlsv3.RegisterRateLimitServiceServer(s.grpcSrv, &rlsServer{svc: s.svc, style: o.headers})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	reflection.Register(s.grpcSrv)
	gln, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return nil, err
	}
	s.grpcAddr = gln.Addr().String()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", healthpb.HealthCheckResponse_SERVING)

	api := &httpAPI{svc: s.svc, style: o.headers, rdb: rdb, reg: reg}
	handler := otelhttp.NewHandler(api.routes(), "http.server",
		otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagators()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/metrics" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz"
		}))
	hln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		_ = gln.Close()
		return nil, err
	}
	s.httpURL = "http://" + hln.Addr().String()
	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)}
	go func() {
		if err := s.grpcSrv.Serve(gln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveErr <- err
		}
	}()
	go func() {
		if err := s.httpSrv.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()
	s.reloader.start(o.reloadInterval, hup)

	cfg := s.svc.config.Load().cfg
	fmt.Fprintf(out, "ratelimitd: gRPC on %s, HTTP on %s (Redis: %s)\n", s.grpcAddr, s.httpURL, where)
	fmt.Fprintf(out, "ratelimitd: %d domain(s) from %s; reload every %v and on SIGHUP\n", len(cfg.Domains), s.reloader.describe(), o.reloadInterval)
	fmt.Fprintf(out, "Try:\n  curl -s -XPOST %s/json -d '{\"domain\":\"edge\",\"descriptors\":[{\"entries\":[{\"key\":\"path\",\"value\":\"/login\"}]}]}'\n", s.httpURL)
	fmt.Fprintf(out, "  curl -s %s/metrics | grep ^ratelimit\n", s.httpURL)
	return s, nil
}

// shutdown stops taking requests, lets those in flight finish within
// drain, then stops the reloader and flushes telemetry and closes Redis.
func (s *server) shutdown(ctx context.Context, drain time.Duration) error {
	var errs []error
	if s.health != nil {
		s.health.Shutdown() // NOT_SERVING: Envoy's health checks move away first
	}
	var wg sync.WaitGroup
	if s.grpcSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { s.grpcSrv.GracefulStop(); close(done) }()
			t := time.NewTimer(drain)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				s.grpcSrv.Stop()
				<-done
			}
		}()
	}
	if s.httpSrv != nil {
		dctx, cancel := context.WithTimeout(ctx, drain)
		errs = append(errs, s.httpSrv.Shutdown(dctx))
		cancel()
	}
	wg.Wait()
	if s.reloader != nil {
		s.reloader.stop()
	}
	errs = append(errs, s.closeAll(ctx))
	return errors.Join(errs...)
}

func (s *server) closeAll(ctx context.Context) error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i](ctx))
	}
	s.closers = nil
	return errors.Join(errs...)
}

// connect returns a client for the -redis URL (a ClusterClient with
// -redis-cluster), or for an embedded miniredis when there is none.
func connect(o options) (redis.UniversalClient, string, func(context.Context) error, error) {
	if o.redisURL == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, "", nil, err
		}
		c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		return c, "embedded miniredis; set REDIS_URL or -redis for a real one", func(context.Context) error {
			err := c.Close()
			mr.Close()
			return err
		}, nil
	}
	if o.cluster {
		co, err := redis.ParseClusterURL(o.redisURL)
		if err != nil {
			return nil, "", nil, fmt.Errorf("-redis: not a Redis URL")
		}
		co.ContextTimeoutEnabled = true
		c := redis.NewClusterClient(co)
		return c, "Redis Cluster at " + co.Addrs[0], func(context.Context) error { return c.Close() }, nil
	}
	ro, err := redis.ParseURL(o.redisURL)
	if err != nil {
		// The URL may hold a password: it is not repeated.
		return nil, "", nil, fmt.Errorf("-redis: not a Redis URL")
	}
	ro.ContextTimeoutEnabled = true
	c := redis.NewClient(ro)
	return c, ro.Addr, func(context.Context) error { return c.Close() }, nil
}
