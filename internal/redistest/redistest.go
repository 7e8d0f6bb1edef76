// Package redistest starts real redis-server processes for tests, on free
// loopback ports, and stops them when the test ends: single servers (Start)
// and Redis Clusters (StartCluster).
//
// When redis-server is not installed the tests that need it are skipped with
// a message, unless RATELIMIT_REQUIRE_REDIS=1 is set (as .ci/run does), in
// which case they fail: no real-Redis test can silently skip in CI.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireEnv is the environment variable that turns a missing redis-server
// into a failure instead of a skip.
const RequireEnv = "RATELIMIT_REQUIRE_REDIS"

// Server is a redis-server process started for a test.
type Server struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string
	// Port is the server's port.
	Port int
	// TLS is the client configuration trusting the server's certificate,
	// for a server from StartTLS; nil otherwise.
	TLS *tls.Config

	tb     testing.TB
	bin    string
	dir    string
	args   []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the path of the program name (redis-server, redis-cli,
// promtool...), or skips (or fails, under RATELIMIT_REQUIRE_REDIS=1) the
// test when it is missing.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		pkgs := "redis-server redis-tools"
		if name == "promtool" || name == "prometheus" {
			pkgs = "prometheus"
		}
		msg := fmt.Sprintf("%s not found in PATH (apt-get install -y %s): %v", name, pkgs, err)
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%s=1 and %s", RequireEnv, msg)
		}
		tb.Skip(msg)
	}
	return path
}

// Start starts a redis-server on a free loopback port with persistence off,
// and stops it (and removes its files) when tb ends. extra are further
// command-line arguments ("--maxmemory", "1mb", ...).
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	return start(tb, nil, fixedArgs(extra))
}

func fixedArgs(extra []string) func() ([]string, error) {
	return func() ([]string, error) { return extra, nil }
}

// StartTLS starts a redis-server that accepts TLS connections only, with a
// certificate for 127.0.0.1 signed by a CA made for the test. Server.TLS
// trusts that CA; clients are not asked for certificates.
func StartTLS(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	pki, err := newTestPKI(dir)
	if err != nil {
		tb.Fatalf("redistest: certificates: %v", err)
	}
	return start(tb, pki, fixedArgs(extra))
}

// start starts a server, over TLS when pki is not nil. extra returns the
// further arguments afresh for each attempt (a cluster node needs a free
// bus port too).
func start(tb testing.TB, pki *testPKI, extra func() ([]string, error)) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb, "redis-server"), dir: tb.TempDir()}
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			tb.Fatalf("redistest: free port: %v", err)
		}
		more, err := extra()
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		portArgs := []string{"--port", strconv.Itoa(port)}
		if pki != nil {
			s.TLS = pki.clientConfig
			portArgs = []string{
				"--port", "0", "--tls-port", strconv.Itoa(port),
				"--tls-cert-file", pki.certFile, "--tls-key-file", pki.keyFile,
				"--tls-ca-cert-file", pki.caFile, "--tls-auth-clients", "no",
			}
		}
		s.args = append(append(portArgs, "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", s.dir,
			"--daemonize", "no", "--loglevel", "warning",
		), more...)
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("redistest: redis-server did not start: %v", lastErr)
	return nil
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, s.args...)
	logf, err := os.Create(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	if err := waitReady(s.Addr, s.TLS, exited, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w; log: %s", err, strings.TrimSpace(string(log)))
	}
	return nil
}

// waitReady polls PING until the server answers, it exits, or the timeout
// passes.
func waitReady(addr string, tlsConfig *tls.Config, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var conn net.Conn
		var err error
		dialer := &net.Dialer{Timeout: 200 * time.Millisecond}
		if tlsConfig != nil {
			conn, err = tls.DialWithDialer(dialer, "tcp", addr, tlsConfig)
		} else {
			conn, err = dialer.Dial("tcp", addr)
		}
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte("PING\r\n"))
			line, rerr := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if rerr == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
			err = rerr
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %v: %v", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Client returns a go-redis client for the server, with
// ContextTimeoutEnabled, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true, TLSConfig: s.TLS})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot die
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port, after Stop. Its data and
// script cache are gone, as after a real crash without persistence.
func (s *Server) Restart() {
	s.tb.Helper()
	var err error
	for range 50 { // the port may linger briefly after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart on %s: %v", s.Addr, err)
}

// Pause stops the process with SIGSTOP: connections stay open and nothing
// answers, as with a hung server. Resume undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		if err := s.cmd.Process.Signal(sig); err != nil {
			s.tb.Errorf("redistest: signal %v: %v", sig, err)
		}
	}
}

// Time returns the server's TIME.
func Time(ctx context.Context, c redis.UniversalClient) (time.Time, error) {
	return c.Time(ctx).Result()
}
