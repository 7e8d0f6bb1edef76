package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requireEnv turns a missing binary into a failure instead of a skip, as in
// the library's tests.
const requireEnv = "RATELIMIT_REQUIRE_REDIS"

// need returns the path of the program name, or skips the test (fails it
// under RATELIMIT_REQUIRE_REDIS=1) when it is not installed.
func need(t *testing.T, name, hint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found (%s): %v", name, hint, err)
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s=1 and %s", requireEnv, msg)
		}
		t.Skip(msg)
	}
	return path
}

// goBinary is the go command that runs this test.
func goBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no go command: %v", err)
	}
	return p
}

// freePort returns a loopback port nobody listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cleanEnv is the test's environment without the variables that would
// change what the children do (their own OTLP endpoints, Redis URLs).
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OTEL_") || strings.HasPrefix(name, "JAEGER_") ||
			name == "REDIS_URL" || name == "RATELIMIT_IDENTITY_KEY" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	logf   string
	exited chan struct{}
	err    error // set before exited is closed
	once   sync.Once
}

// procs are the processes of a test, to report their logs on failure.
type procs struct {
	mu   sync.Mutex
	list []*proc
	dir  string
}

// newProcs keeps the processes' files in a temporary directory, or in
// E2E_LOG_DIR when it is set (kept after the test, to read the logs).
func newProcs(t *testing.T) *procs {
	dir := t.TempDir()
	if d := os.Getenv("E2E_LOG_DIR"); d != "" {
		dir = filepath.Join(d, time.Now().Format("20060102-150405"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("processes' files in %s", dir)
	}
	ps := &procs{dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			ps.dumpLogs(t)
		}
	})
	return ps
}

// start runs bin with args and env; the process is stopped when the test
// ends (SIGTERM, then SIGKILL after 10 s).
func (ps *procs) start(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logf := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = ps.dir
	// If the test binary dies without running its cleanups (a go test
	// -timeout panic), the kernel kills the child rather than leaving it
	// running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and waits; a process still running after 10 s is
// killed (Jaeger was once seen ignoring a first SIGTERM).
func (p *proc) stop(t *testing.T) {
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Logf("%s ignored SIGTERM for 10s: killed", p.name)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// dead returns an error when the process has exited.
func (p *proc) dead() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

func (ps *procs) dumpLogs(t *testing.T) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		b, _ := os.ReadFile(p.logf)
		if len(b) > 4000 {
			b = append([]byte("...\n"), b[len(b)-4000:]...)
		}
		t.Logf("--- %s log (%s):\n%s", p.name, p.logf, b)
	}
}

// waitFor polls cond every 100 ms until it returns nil, failing the test
// after timeout or as soon as one of the watched processes exits.
func waitFor(t *testing.T, what string, timeout time.Duration, watch []*proc, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		for _, p := range watch {
			if derr := p.dead(); derr != nil {
				t.Fatalf("waiting for %s: %v (last: %v)", what, derr, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpOK returns nil when GET url answers 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// tcpOpen returns nil when addr accepts a connection.
func tcpOpen(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	return c.Close()
}

// build runs a go build (or go tool) command and returns its output.
func build(ctx context.Context, dir string, env []string, goBin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%v: %w", err, ctx.Err())
	}
	return out.String(), err
}
