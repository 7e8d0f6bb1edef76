// Command rls measures ratelimitd (cmd/ratelimitd) as Envoy calls it:
// ShouldRateLimit over gRPC on loopback, decisions per second and
// latency percentiles at several concurrencies, beside the library called
// in-process (Limiter.Allow and Charger.AllowAll) on the same redis-server,
// and beside gubernator (github.com/gubernator-io/gubernator/v2), which keeps
// its counters in its own memory, one node, over gRPC on loopback.
//
//	cd bench/rls && go run .                    # 16 and 64 callers, 5 s each
//	cd bench/rls && go run . -conc 16,64 -duration 10s
//
// It starts a redis-server of its own, builds and runs ratelimitd from
// ../../cmd/ratelimitd and gubernator's own command (cmd/gubernator, from
// the module in ./gubernator, at the versions gubernator's go.mod asks
// for). The limits are so high that nothing is ever denied, so that every
// call does its full write path. It is a module of its own so that
// gubernator's dependencies (Kubernetes and etcd clients among them) stay out
// of bench/go.mod.
package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	guber "github.com/gubernator-io/gubernator/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

const config = `domain: bench
descriptors:
  - key: client
    rate_limit:
      unit: second
      requests_per_unit: 1000000
      algorithm: token_bucket
  - key: route
    rate_limit:
      unit: second
      requests_per_unit: 1000000
      algorithm: token_bucket
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rls:", err)
		os.Exit(1)
	}
}

func run() error {
	concFlag := flag.String("conc", "16,64", "concurrent callers, comma-separated")
	dur := flag.Duration("duration", 5*time.Second, "how long each cell runs")
	keys := flag.Int("keys", 1000, "distinct clients")
	smoke := flag.Bool("smoke", false, "a moment per cell, for CI: checks that the benchmark runs, not its figures")
	flag.Parse()
	if *smoke {
		*dur = 200 * time.Millisecond
	}
	var concs []int
	for _, s := range strings.Split(*concFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-conc %q", *concFlag)
		}
		concs = append(concs, n)
	}

	tmp, err := os.MkdirTemp("", "rls-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	redisAddr, stopRedis, err := startRedis(tmp)
	if err != nil {
		return err
	}
	defer stopRedis()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true, PoolSize: 128})
	defer rdb.Close()

	grpcAddr, stopSvc, err := startService(tmp, redisAddr)
	if err != nil {
		return err
	}
	defer stopSvc()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)

	guberAddr, guberVer, stopGuber, err := startGubernator(tmp)
	if err != nil {
		return err
	}
	defer stopGuber()
	gc, err := guber.DialV1Server(guberAddr, nil)
	if err != nil {
		return err
	}
	guberReq := func(name, key string) *guber.RateLimitReq {
		return &guber.RateLimitReq{Name: name, UniqueKey: key, Hits: 1, Limit: 1_000_000, Duration: 1000,
			Algorithm: guber.Algorithm_TOKEN_BUCKET}
	}
	guberCheck := func(resp *guber.GetRateLimitsResp, err error) error {
		if err != nil {
			return err
		}
		for _, r := range resp.GetResponses() {
			if r.GetError() != "" {
				return errors.New(r.GetError())
			}
			if r.GetStatus() != guber.Status_UNDER_LIMIT {
				return errors.New("denied")
			}
		}
		return nil
	}

	lim, err := ratelimit.New(rdb, ratelimit.PerSecond(1_000_000), ratelimit.WithNamespace("bench-lib"))
	if err != nil {
		return err
	}
	charger, err := ratelimit.NewCharger(rdb, ratelimit.WithNamespace("bench-charger"))
	if err != nil {
		return err
	}
	high := ratelimit.PerSecond(1_000_000)

	type bcase struct {
		name string
		call func(ctx context.Context, i int) error
	}
	req := func(i int, two bool) *rlsv3.RateLimitRequest {
		r := &rlsv3.RateLimitRequest{Domain: "bench", Descriptors: []*rlv3.RateLimitDescriptor{
			{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "client", Value: strconv.Itoa(i % *keys)}}}}}
		if two {
			r.Descriptors = append(r.Descriptors, &rlv3.RateLimitDescriptor{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: "route", Value: strconv.Itoa(i % 7)}}})
		}
		return r
	}
	check := func(resp *rlsv3.RateLimitResponse, err error) error {
		if err != nil {
			return err
		}
		if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			return errors.New("denied")
		}
		return nil
	}
	cases := []bcase{
		{"ratelimitd ShouldRateLimit, 1 descriptor (gRPC, loopback)", func(ctx context.Context, i int) error {
			return check(client.ShouldRateLimit(ctx, req(i, false)))
		}},
		{"ratelimitd ShouldRateLimit, 2 descriptors all-or-nothing (gRPC)", func(ctx context.Context, i int) error {
			return check(client.ShouldRateLimit(ctx, req(i, true)))
		}},
		{"gubernator GetRateLimits, 1 limit (gRPC, in its memory)", func(ctx context.Context, i int) error {
			return guberCheck(gc.GetRateLimits(ctx, &guber.GetRateLimitsReq{Requests: []*guber.RateLimitReq{
				guberReq("client", strconv.Itoa(i%*keys))}}))
		}},
		{"gubernator GetRateLimits, 2 limits, each on its own (gRPC)", func(ctx context.Context, i int) error {
			return guberCheck(gc.GetRateLimits(ctx, &guber.GetRateLimitsReq{Requests: []*guber.RateLimitReq{
				guberReq("client", strconv.Itoa(i%*keys)), guberReq("route", strconv.Itoa(i%7))}}))
		}},
		{"library in-process: Limiter.Allow", func(ctx context.Context, i int) error {
			res, err := lim.Allow(ctx, strconv.Itoa(i%*keys))
			if err == nil && !res.Allowed {
				err = errors.New("denied")
			}
			return err
		}},
		{"library in-process: Charger.AllowAll, 2 charges", func(ctx context.Context, i int) error {
			res, err := charger.AllowAll(ctx,
				ratelimit.Charge{Identity: strconv.Itoa(i % *keys), Limit: high, Cost: 1},
				ratelimit.Charge{Identity: "route" + strconv.Itoa(i%7), Limit: high, Cost: 1})
			if err == nil && !res.Allowed {
				err = errors.New("denied")
			}
			return err
		}},
	}
	fmt.Printf("ratelimitd benchmark: %s/%s, %d CPUs, %s, redis-server on loopback, gubernator %s, %v per cell, %d clients\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), guberVer, *dur, *keys)
	fmt.Println("| case | callers | decisions/s | p50 µs | p99 µs | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	ctx := context.Background()
	for _, c := range cases {
		for _, n := range concs {
			// A short warm-up: connections, script cache.
			drive(ctx, c.call, n, 100*time.Millisecond)
			r := drive(ctx, c.call, n, *dur)
			fmt.Printf("| %s | %d | %.0f | %.0f | %.0f | %d |\n", c.name, n, r.perSec, r.p50, r.p99, r.errs)
			if r.errs > 0 {
				fmt.Println("  first error:", r.first)
			}
		}
	}
	return nil
}

type result struct {
	perSec, p50, p99 float64
	errs             int
	first            error
}

// drive runs conc goroutines calling call for d (at most 2 million calls
// each) and returns the throughput and latency percentiles.
func drive(ctx context.Context, call func(context.Context, int) error, conc int, d time.Duration) result {
	var wg sync.WaitGroup
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	firsts := make([]error, conc)
	start := time.Now()
	deadline := start.Add(d)
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := time.Now()
			for i := 0; i < 2_000_000 && now.Before(deadline); i++ {
				err := call(ctx, g*1_000_003+i)
				end := time.Now()
				lat[g] = append(lat[g], end.Sub(now))
				now = end
				if err != nil {
					errs[g]++
					if firsts[g] == nil {
						firsts[g] = err
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	var r result
	for g := range conc {
		all = append(all, lat[g]...)
		r.errs += errs[g]
		if r.first == nil {
			r.first = firsts[g]
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))]) / float64(time.Microsecond)
	}
	r.perSec = float64(len(all)) / elapsed.Seconds()
	r.p50, r.p99 = q(0.50), q(0.99)
	return r
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("redis-server not found (apt-get install -y redis-server): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(context.Background()).Err() == nil {
			return addr, stop, nil
		}
		if i == 500 {
			stop()
			return "", nil, errors.New("redis-server did not answer PING within 5s")
		}
		time.Sleep(10 * time.Millisecond) // polling: redis-server starts on its own time
	}
}

var listening = regexp.MustCompile(`gRPC on (\S+), HTTP on`)

// startService builds ratelimitd from ../cmd/ratelimitd and runs it on the
// redis-server with the benchmark's configuration.
func startService(dir, redisAddr string) (string, func(), error) {
	bin := filepath.Join(dir, "ratelimitd")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..", "cmd", "ratelimitd")
	if out, err := build.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("building ratelimitd (run from bench/rls): %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-config", cfg, "-redis", "redis://"+redisAddr, "-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0",
		"-log-level", "error", "-reload-interval", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		stop()
		return "", nil, errors.New("ratelimitd printed nothing")
	}
	m := listening.FindStringSubmatch(sc.Text())
	if m == nil {
		stop()
		return "", nil, fmt.Errorf("ratelimitd: %q", sc.Text())
	}
	go func() {
		for sc.Scan() { // drain stdout so the process never blocks on it
		}
	}()
	return m[1], stop, nil
}

// guberVersion is the gubernator module version the binary at bin was built
// with, read from the binary itself.
func guberVersion(bin string) string {
	if info, err := buildinfo.ReadFile(bin); err == nil {
		// Built as a tool, gubernator's module is the binary's main module.
		for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
			if m.Path == "github.com/gubernator-io/gubernator/v2" {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}

// startGubernator builds gubernator's own command (a tool of the module in
// ./gubernator, whose go.mod is gubernator's own choice of versions: built
// with this module's newer OpenTelemetry it exits at start-up) and runs it
// as one node: gRPC and HTTP on free loopback ports, member-list discovery
// on a third with itself as its only known node, tracing off, logs at
// error.
func startGubernator(dir string) (addr, version string, stop func(), err error) {
	bin := filepath.Join(dir, "gubernator")
	build := exec.Command("go", "build", "-o", bin, "github.com/gubernator-io/gubernator/v2/cmd/gubernator")
	build.Dir = "gubernator"
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", nil, fmt.Errorf("building gubernator (run from bench/rls): %v\n%s", err, out)
	}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return "", "", nil, err
		}
		ports[i] = p
	}
	grpcAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"GUBER_GRPC_ADDRESS="+grpcAddr,
		"GUBER_HTTP_ADDRESS=127.0.0.1:"+strconv.Itoa(ports[1]),
		"GUBER_ADVERTISE_ADDRESS="+grpcAddr,
		"GUBER_PEER_DISCOVERY_TYPE=member-list",
		"GUBER_MEMBERLIST_ADDRESS=127.0.0.1:"+strconv.Itoa(ports[2]),
		"GUBER_MEMBERLIST_BIND_ADDRESS=127.0.0.1:"+strconv.Itoa(ports[2]),
		"GUBER_MEMBERLIST_KNOWN_NODES=127.0.0.1:"+strconv.Itoa(ports[2]), // itself: a cluster of one
		"GUBER_LOG_LEVEL=error",
		"OTEL_TRACES_EXPORTER=none",
	)
	// Read only once Wait has returned (stop, or the exited case), when
	// exec's copying goroutine is done with it.
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", "", nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
	}
	c, err := guber.DialV1Server(grpcAddr, nil)
	if err != nil {
		stop()
		return "", "", nil, err
	}
	// Ready when it answers healthy with itself as its one peer; given up on
	// at once if the process ends, and after 30 s if it never gets there.
	deadline := time.Now().Add(30 * time.Second)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.HealthCheck(ctx, &guber.HealthCheckReq{})
		cancel()
		if err == nil && h.GetStatus() == "healthy" && h.GetPeerCount() >= 1 {
			return grpcAddr, guberVersion(bin), stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", "", nil, fmt.Errorf("gubernator not healthy within 30s (last: %v, %v)\n%s", h, err, stderr.String())
		}
		select {
		case werr := <-exited:
			exited <- werr // for stop, should anyone call it
			return "", "", nil, fmt.Errorf("gubernator exited at start-up (%v)\n%s", werr, stderr.String())
		case <-poll.C: // gubernator starts on its own time; there is no readiness signal but polling
		}
	}
}
