package ratelimit

import (
	"context"
	"strconv"
	"testing"
)

// Client allocations per decision on a real redis-server (go-redis v9.23),
// for a lone Allow on a warm connection, with and without pipelining (a lone
// call goes out directly either way). Of these 14: the Redis key string (1);
// the decision, which the dispatcher may queue (1); the backend timeout's
// context (context.WithTimeout: the context, its timer, cancel func and done
// channel, 5); the command, its argument slice, the boxed key and the
// []int64 reply (4); go-redis's connection health check on every pool Get
// (3). BenchmarkAllowConcurrent reports the pipelined path, where the
// timeout needs no context of its own and a batch shares one script call.
const maxAllocsPerAllow = 14

// TestAllocsPerAllow fails when a change adds allocations to the decision
// path.
func TestAllocsPerAllow(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	srv := redistestStart(t)
	c := srv.Client(t)
	ctx := context.Background()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
	}
	for _, on := range []bool{false, true} {
		l := mustNew(t, c, PerSecond(1e6), WithPipelining(on))
		for _, id := range ids { // warm: script cached, connection open
			if _, err := l.Allow(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		i := 0
		got := testing.AllocsPerRun(500, func() {
			if _, err := l.Allow(ctx, ids[i%len(ids)]); err != nil {
				t.Fatal(err)
			}
			i++
		})
		t.Logf("pipelining %v: %.1f allocs per Allow", on, got)
		if got > maxAllocsPerAllow {
			t.Errorf("pipelining %v: %.1f allocs per Allow, want at most %d", on, got, maxAllocsPerAllow)
		}
	}
}
