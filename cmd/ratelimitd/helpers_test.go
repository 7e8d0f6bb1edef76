package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
)

// binary is the ratelimitd built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ratelimitd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ratelimitd")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	leaktest.VerifyTestMain(m)
}

// proc is a ratelimitd process started for a test.
type proc struct {
	cmd      *exec.Cmd
	httpURL  string
	grpcAddr string
	conn     *grpc.ClientConn
	client   rlsv3.RateLimitServiceClient
	logs     *syncBuffer
	exited   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`gRPC on (\S+), HTTP on (\S+) `)

// startProc runs the binary with args (on free loopback ports unless args
// say otherwise), waits for it to listen and connects a gRPC client. It
// stops the process (SIGTERM, then SIGKILL) when the test ends.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	args = append([]string{"-http", "127.0.0.1:0", "-grpc", "127.0.0.1:0"}, args...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL=", "OTEL_EXPORTER_OTLP_ENDPOINT=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
			}
		}
		close(lines)
	}()
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case line, ok := <-lines:
		m := listening.FindStringSubmatch(line)
		if !ok || m == nil {
			<-p.exited
			t.Fatalf("ratelimitd did not start: %q\n%s", line, p.logs.String())
		}
		p.grpcAddr, p.httpURL = m[1], m[2]
	case <-time.After(30 * time.Second):
		t.Fatalf("ratelimitd did not start within 30s\n%s", p.logs.String())
	}
	p.conn, err = grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.client = rlsv3.NewRateLimitServiceClient(p.conn)
	return p
}

// stop sends SIGTERM and waits for a graceful exit (SIGKILL after 15 s).
func (p *proc) stop(t *testing.T) {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("ratelimitd did not stop on SIGTERM within 15s")
	}
}

// writeConfig writes files (name -> YAML) into a new directory.
func writeConfig(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// desc builds a descriptor of key, value pairs.
func desc(kv ...string) *rlv3.RateLimitDescriptor {
	d := &rlv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func (p *proc) should(t *testing.T, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.client.ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v\nlogs:\n%s", err, p.logs.String())
	}
	return resp
}

// post sends body as JSON to path and decodes the answer into out (when
// not nil); it returns the status code and headers.
func post(t *testing.T, url string, body any, out any) (int, http.Header) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("POST %s: %d %s: %v", url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, resp.Header
}

// metric returns the value of the sample line of /metrics that starts with
// prefix ("" when there is none).
func metric(t *testing.T, baseURL, prefix string) string {
	t.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	return ""
}

// eventually polls cond every 20 ms until it holds, failing the test after
// within: for changes the service makes on its own time (a reload).
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
