package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// TestInstancesShareLimits runs two demo processes, as built from this
// package, on one real redis-server with no further configuration (no
// RATELIMIT_IDENTITY_KEY), and hammers one API key through both: together
// they must admit no more than burst + rate × elapsed (elapsed on Redis
// TIME), and at least 85% of it. A demo that drew a secret per process
// counted each instance alone and admitted about twice the limit.
func TestInstancesShareLimits(t *testing.T) {
	srv := redistest.Start(t)
	bin := filepath.Join(t.TempDir(), "httpserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const (
		rate, burst = 20, 10 // per second
		workers     = 8
		maxRequests = 20000
		runFor      = 2 * time.Second
	)
	urls := make([]string, 2)
	for i := range urls {
		urls[i] = startProcess(t, bin, "-redis", "redis://"+srv.Addr+"/0", "-addr", "127.0.0.1:0",
			"-rate", "20", "-per", "1s", "-burst", "10", "-timeout", "10s", "-log-level", "error")
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	ctx := context.Background()
	start, err := redistest.Time(ctx, srv.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	var sent, admitted, other atomic.Int64
	stop := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop) && sent.Add(1) <= maxRequests; i++ {
				req, _ := http.NewRequest(http.MethodGet, urls[(w+i)%2]+"/api/hello", nil)
				req.Header.Set("X-API-Key", "shared-key")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	end, err := redistest.Time(ctx, srv.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	elapsed := end.Sub(start)
	bound := float64(burst) + rate*elapsed.Seconds()
	t.Logf("two instances, one API key: %d admitted of %d sent in %v (Redis TIME); bound burst + rate × elapsed = %.1f",
		admitted.Load(), min(sent.Load(), maxRequests), elapsed, bound)
	if other.Load() != 0 {
		t.Fatalf("%d responses neither 200 nor 429", other.Load())
	}
	if got := float64(admitted.Load()); got > bound+1 {
		t.Errorf("%d admitted by two instances, above burst + rate × elapsed = %.1f: they do not share the limit", admitted.Load(), bound)
	} else if got < 0.85*bound {
		t.Errorf("%d admitted, below 85%% of the bound %.1f: the load did not saturate the limit", admitted.Load(), bound)
	}
}

var listeningRE = regexp.MustCompile(`demo on (http://127\.0\.0\.1:\d+)`)

// urlWriter is the demo's stdout: it sends the URL of the line that says
// where the demo listens.
type urlWriter struct {
	mu    sync.Mutex
	buf   []byte
	found chan<- string
}

func (w *urlWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found == nil {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if m := listeningRE.FindSubmatch(w.buf); m != nil {
		w.found <- string(m[1])
		w.found, w.buf = nil, nil
	}
	return len(p), nil
}

// startProcess runs the demo binary with args until the test ends, and
// returns its base URL, read from its first line of output.
func startProcess(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "RATELIMIT_IDENTITY_KEY=", "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=")
	found := make(chan string, 1)
	cmd.Stdout = &urlWriter{found: found}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case u := <-found:
		return u
	case <-exited:
		t.Fatal("the demo exited before it listened")
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not say where it listens within 30s")
	}
	return ""
}
