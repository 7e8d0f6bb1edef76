package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// loadGen is the built-in traffic generator of -load: three well-behaved
// clients that stay under the limits, one abusive client far above the
// request limit and one greedy one above the token limit, each with its own
// API key, against the server's own loopback address. It
// is bounded in time and in requests, and stops on shutdown.
type loadGen struct {
	clients []loadClient
	maxReqs int64
	dur     time.Duration
	sent    atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	client  *http.Client

	mu    sync.Mutex
	codes map[string]map[int]int // client name -> status -> count
}

// loadClient sends a hello request every helloEvery and a generate request
// every genEvery.
type loadClient struct {
	name       string
	helloEvery time.Duration
	genEvery   time.Duration
	tokens     int
	used       int // of tokens; the rest is refunded (0: all used)
}

// startLoad starts the generator. The well-behaved clients send at two
// thirds of the per-client rate, and use 200 of the 300 tokens their
// generate calls reserve (the server refunds 100); the abusive one sends at
// 20 times the rate, plus token-hungry generate calls; the greedy one asks
// for 3000 tokens every three request intervals.
func startLoad(ctx context.Context, baseURL string, limit ratelimit.Limit, dur time.Duration, maxReqs int) *loadGen {
	interval := limit.Per / time.Duration(limit.Rate) // one request's worth of refill
	good := max(interval*3/2, time.Millisecond)
	bad := max(interval/20, time.Millisecond)
	g := &loadGen{
		maxReqs: int64(maxReqs),
		dur:     dur,
		done:    make(chan struct{}),
		client:  &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
		codes:   map[string]map[int]int{},
	}
	for i := 1; i <= 3; i++ {
		g.clients = append(g.clients, loadClient{name: fmt.Sprintf("load-good-%d", i), helloEvery: good, genEvery: 4 * good, tokens: 300, used: 200})
	}
	g.clients = append(g.clients, loadClient{name: "load-abuser", helloEvery: bad, genEvery: 10 * bad, tokens: 2000})
	// Within the request limit but far over the token limit, so that the
	// "llm" limit has blocks to show too (the abuser's calls mostly stop
	// at the "api" limit first).
	g.clients = append(g.clients, loadClient{name: "load-greedy", helloEvery: 10 * good, genEvery: 2 * good, tokens: 3000})

	ctx, g.cancel = context.WithTimeout(ctx, dur)
	var wg sync.WaitGroup
	for _, c := range g.clients {
		wg.Go(func() { g.run(ctx, baseURL, c) })
	}
	go func() {
		wg.Wait()
		g.client.CloseIdleConnections()
		close(g.done)
	}()
	return g
}

// generatePath is the client's generate call: it reserves tokens and, when
// it uses fewer, says so, and the server refunds the rest.
func (c loadClient) generatePath() string {
	if c.used > 0 {
		return fmt.Sprintf("/api/generate?tokens=%d&used=%d", c.tokens, c.used)
	}
	return fmt.Sprintf("/api/generate?tokens=%d", c.tokens)
}

func (g *loadGen) describe() string {
	var b strings.Builder
	for _, c := range g.clients {
		fmt.Fprintf(&b, "%s (/api/hello every %v, %s every %v); ", c.name, c.helloEvery, c.generatePath(), c.genEvery)
	}
	fmt.Fprintf(&b, "for at most %v or %d requests", g.dur, g.maxReqs)
	return b.String()
}

func (g *loadGen) run(ctx context.Context, baseURL string, c loadClient) {
	hello := time.NewTicker(c.helloEvery)
	defer hello.Stop()
	gen := time.NewTicker(c.genEvery)
	defer gen.Stop()
	for {
		var path string
		select {
		case <-ctx.Done():
			return
		case <-hello.C:
			path = "/api/hello"
		case <-gen.C:
			path = c.generatePath()
		}
		if g.sent.Add(1) > g.maxReqs {
			g.cancel() // the budget is spent: stop every client
			return
		}
		g.do(ctx, baseURL+path, c.name)
	}
}

func (g *loadGen) do(ctx context.Context, url, name string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	req.Header.Set("X-API-Key", name)
	status := 0 // 0: the request failed
	if resp, err := g.client.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
	} else if ctx.Err() != nil {
		return // shutting down
	}
	g.mu.Lock()
	if g.codes[name] == nil {
		g.codes[name] = map[int]int{}
	}
	g.codes[name][status]++
	g.mu.Unlock()
}

// counts returns a copy of the status counts per client.
func (g *loadGen) counts() map[string]map[int]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]map[int]int, len(g.codes))
	for name, m := range g.codes {
		out[name] = make(map[int]int, len(m))
		for k, v := range m {
			out[name][k] = v
		}
	}
	return out
}

// stop ends the generator, waits for its clients and summarises what they
// got.
func (g *loadGen) stop() string {
	g.cancel()
	<-g.done
	counts := g.counts()
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "stopped after %d requests:", min(g.sent.Load(), g.maxReqs))
	for i, n := range names {
		sep := ";"
		if i == len(names)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, " %s %s%s", n, statusCounts(counts[n]), sep)
	}
	return b.String()
}

// statusCounts formats status counts as "200×33 429×487", by status.
func statusCounts(m map[int]int) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d×%d", c, m[c])
	}
	return strings.Join(parts, " ")
}
