package httplimit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestHalfClosedClientNotAdmitted: with the limit used up, clients that
// send a request and half-close their connection (net/http then cancels
// the request's context but still writes the response) must not reach the
// handler, behind a middleware that takes a moment (auth, logging), under
// the default FailOpen, with pipelining on and off. Before the fix every
// one of them did: the canceled call failed, and FailOpen let it through.
func TestHalfClosedClientNotAdmitted(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			lim := newLimiter(t, c, ratelimit.PerHour(1), ratelimit.WithPipelining(pipelining),
				ratelimit.WithNamespace(fmt.Sprintf("halfclose-%v", pipelining)))
			mw := mustMiddleware(t, lim)
			var reached atomic.Int64
			limited := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Add(1)
			}))
			// The slow middleware in front: it works until the client has
			// gone (bounded), as an auth call would take a moment.
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Half-Close") != "" {
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
						t.Error("the half-closed client's request context did not end")
					}
				}
				limited.ServeHTTP(w, r)
			})
			hs := httptest.NewServer(slow)
			defer hs.Close()

			resp, err := hs.Client().Get(hs.URL)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("first request: %v %v", resp, err)
			}
			resp.Body.Close()
			hs.Client().CloseIdleConnections()
			const n = 20
			statuses := map[int]int{}
			for range n {
				conn, err := net.Dial("tcp", hs.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Half-Close: 1\r\n\r\n")
				_ = conn.(*net.TCPConn).CloseWrite()
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
					statuses[resp.StatusCode]++
					resp.Body.Close()
				}
				conn.Close()
			}
			if got := reached.Load(); got != 1 {
				t.Fatalf("%d requests reached the handler, want only the first (%d half-closed clients: statuses %v)", got, n, statuses)
			}
			t.Logf("half-closed clients got %v", statuses)
		})
	}
}

// TestConcurrencyLeaseOutlivesClient: the lease of a Concurrency limit
// lives exactly as long as the handler. Max 1, a handler that does not
// watch its context (GPU work does not): when its client disconnects, a
// second client still gets a 429 until the handler returns; a handler that
// outlasts the lease TTL keeps its lease.
func TestConcurrencyLeaseOutlivesClient(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	const ttl = 300 * time.Millisecond
	conc, err := ratelimit.NewConcurrency(c, 1, ratelimit.WithNamespace("outlive"), ratelimit.WithTimeout(10*time.Second),
		ratelimit.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	mw := mustMiddleware(t, Concurrency(conc), WithKey(KeyByHeader("X-API-Key")))
	entered, clientGone, finish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	hs := httptest.NewServer(mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/job" {
			return
		}
		close(entered)
		<-r.Context().Done() // the client has gone ...
		close(clientGone)
		<-finish // ... and the work goes on
	})))
	defer hs.Close()
	defer hs.Client().CloseIdleConnections()
	var finishOnce sync.Once
	endJob := func() { finishOnce.Do(func() { close(finish) }) }
	defer endJob() // on a failure too, before hs.Close waits for the handler
	get := func(ctx context.Context, path string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+path, nil)
		req.Header.Set("X-API-Key", "gpu-user")
		resp, err := hs.Client().Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := get(ctx, "/job"); first <- err }()
	<-entered
	cancel() // client 1 disconnects
	<-clientGone
	if err := <-first; err == nil {
		t.Fatal("the first client's request was not canceled")
	}
	if code, err := get(context.Background(), "/other"); err != nil || code != http.StatusTooManyRequests {
		t.Fatalf("second client while the first handler runs: %d %v, want 429", code, err)
	}
	// Let the lease TTL pass three times over while the handler works:
	// the lease is extended, not lost. (Time passing is what is tested.)
	time.Sleep(3 * ttl)
	if code, err := get(context.Background(), "/other"); err != nil || code != http.StatusTooManyRequests {
		t.Fatalf("second client after 3 lease TTLs of work: %d %v, want 429", code, err)
	}
	endJob()
	// The handler returned: the lease is released at once, not at its TTL.
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := conc.Peek(context.Background(), "x-api-key:gpu-user")
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease still held after the handler returned: %+v", res)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, err := get(context.Background(), "/other"); err != nil || code != http.StatusOK {
		t.Fatalf("after the handler returned: %d %v, want 200", code, err)
	}
}
