package ratelimit

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// A Redis that hangs: stopped, or paused by CLIENT PAUSE.

// pauseKind hangs a server: the process stopped (SIGSTOP), or every client
// paused by the server itself (CLIENT PAUSE ALL), which unlike SIGSTOP keeps
// answering the TCP handshake and the pausing command. window is how long
// calls may start after begin and still be sure to end inside the pause.
type pauseKind struct {
	name   string
	window time.Duration
	begin  func(t *testing.T, srv *redistest.Server, admin *redis.Client)
	end    func(t *testing.T, srv *redistest.Server, admin *redis.Client)
}

// clientPauseFor is how long CLIENT PAUSE holds: Redis cannot be unpaused
// early (CLIENT UNPAUSE is paused too in ALL mode), so the test waits it
// out.
const clientPauseFor = 2 * time.Second

var pauseKinds = []pauseKind{
	{
		name:   "sigstop",
		window: time.Minute, // until the test resumes it
		begin:  func(_ *testing.T, srv *redistest.Server, _ *redis.Client) { srv.Pause() },
		end:    func(_ *testing.T, srv *redistest.Server, _ *redis.Client) { srv.Resume() },
	},
	{
		name:   "client_pause",
		window: clientPauseFor / 2,
		begin: func(t *testing.T, _ *redistest.Server, admin *redis.Client) {
			if err := admin.Do(context.Background(), "CLIENT", "PAUSE", clientPauseFor.Milliseconds(), "ALL").Err(); err != nil {
				t.Fatalf("CLIENT PAUSE: %v", err)
			}
		},
		end: func(t *testing.T, _ *redistest.Server, admin *redis.Client) {
			if !pollUntil(2*clientPauseFor, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), clientPauseFor)
				defer cancel()
				return admin.Ping(ctx).Err() == nil
			}) {
				t.Fatal("Redis still paused after twice the CLIENT PAUSE time")
			}
		},
	},
}

// TestPausedRedis hangs Redis (SIGSTOP, then CLIENT PAUSE ALL) under 50
// concurrent callers spread over every algorithm, the multi-limit call and
// the leases, each kind under both fail strategies, with a client that
// applies context deadlines to its socket (ContextTimeoutEnabled) and one
// that does not (the limiter then guards each call with a goroutine). Every
// call must return within the backend timeout plus slack, decided by the
// fail strategy, with a timeout error returned and published; goroutines
// must stay bounded during the pause (no pile-up: at most one per caller
// plus one per pooled connection) and return to the baseline after it.
// Latency figures are logged for the closing note ("go test -run
// TestPausedRedis -v ./ratelimit").
func TestPausedRedis(t *testing.T) {
	const (
		timeout  = 100 * time.Millisecond
		slack    = 500 * time.Millisecond // a loaded 2-core CI machine under -race
		callers  = 50
		callsPer = 4
		poolSize = 10
	)
	for _, pause := range pauseKinds {
		for _, direct := range []bool{true, false} {
			for _, pipelining := range []bool{true, false} {
				clientKind := "ctx_timeout"
				if !direct {
					clientKind = "no_ctx_timeout"
				}
				pipe := "pipelined"
				if !pipelining {
					pipe = "unpipelined"
				}
				t.Run(pause.name+"/"+clientKind+"/"+pipe, func(t *testing.T) {
					srv := redistestStart(t)
					admin := srv.Client(t)
					c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: direct, PoolSize: poolSize})
					t.Cleanup(func() { _ = c.Close() })
					kinds, rec := faultKindsBoth(t, c, WithTimeout(timeout), WithPipelining(pipelining))
					// Load every script and dial the pool's connections first.
					for _, k := range kinds {
						if _, err := k.call(context.Background(), "warm"); err != nil {
							t.Fatalf("%s before the pause: %v", k.name, err)
						}
					}
					base := runtime.NumGoroutine()
					before := len(rec.all())

					pause.begin(t, srv, admin)
					resumed := false
					defer func() {
						if !resumed {
							pause.end(t, srv, admin)
						}
					}()
					callsUntil := time.Now().Add(pause.window)
					var peak atomic.Int64
					samplerDone := make(chan struct{})
					stopSampler := make(chan struct{})
					go func() {
						defer close(samplerDone)
						for {
							if n := int64(runtime.NumGoroutine()); n > peak.Load() {
								peak.Store(n)
							}
							select {
							case <-stopSampler:
								return
							case <-time.After(5 * time.Millisecond):
							}
						}
					}()
					durations := make([][]time.Duration, callers)
					var wg sync.WaitGroup
					for i := range callers {
						k := kinds[i%len(kinds)]
						wg.Add(1)
						go func() {
							defer wg.Done()
							for j := 0; j < callsPer && time.Now().Before(callsUntil); j++ {
								start := time.Now()
								res, err := k.call(context.Background(), "caller-"+strconv.Itoa(i))
								durations[i] = append(durations[i], time.Since(start))
								if msg := k.checkFailed(res, err, ErrorTimeout); msg != "" {
									t.Errorf("during the pause: %s", msg)
								}
							}
						}()
					}
					wg.Wait()
					close(stopSampler)
					<-samplerDone
					events := rec.all()[before:]
					// Every caller has returned while Redis is still hung. What
					// may be left is bounded by the pool, not by the calls: per
					// pooled connection, the goroutine reading it and one of
					// go-redis's dialers still in the HELLO of a new one (it
					// dials up to PoolSize at once), which the client without
					// context deadlines keeps until its ReadTimeout (or until
					// Redis answers).
					left, settled := waitGoroutines(base+2*poolSize+10, time.Second)
					pause.end(t, srv, admin)
					resumed = true

					all := slices.Concat(durations...)
					s := summarize(all)
					grew := int(peak.Load()) - base
					t.Logf("FIGURES pause=%s client=%s %s timeout=%v callers=%d calls=%d p50=%v p99=%v max=%v goroutines: base %d, peak %+d, left while paused %+d",
						pause.name, clientKind, pipe, timeout, callers, s.n, s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond),
						s.max.Round(time.Millisecond), base, grew, left-base)
					if s.n < callers {
						t.Fatalf("only %d calls ran inside the pause", s.n)
					}
					// Not a speed assertion: the promise is "within the timeout".
					if s.max > timeout+slack {
						t.Errorf("slowest call took %v, past the %v timeout + %v slack", s.max, timeout, slack)
					}
					if len(events) != s.n {
						t.Errorf("%d events published for %d calls", len(events), s.n)
					}
					checkEvents(t, events, kinds, ErrorTimeout)
					// Each caller is one goroutine; without the context deadline
					// each call runs on one more, which leaves at the deadline
					// unless it holds a pooled connection; go-redis adds its
					// dialers (at most one per pooled connection). 200 calls
					// must not leave 200 goroutines behind.
					if limit := 2*callers + 2*poolSize + 40; grew > limit {
						t.Errorf("goroutines grew by %d during the pause, more than 2 × %d callers + 2 × %d pooled connections + 40", grew, callers, poolSize)
					}
					if !settled {
						t.Errorf("%d goroutines after every caller returned, still paused: more than %d before + 2 × %d pooled connections + 10", left, base, poolSize)
					}

					recoverKinds(t, kinds, "after")
					if n, ok := waitGoroutines(base+4, 10*time.Second); !ok {
						t.Errorf("%d goroutines 10s after the pause, %d before it", n, base)
					}
				})
			}
		}
	}
}
