package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

// TestPipelineCluster runs pipelined decisions on a real three-master
// Cluster: concurrent calls and a BatchAllow over identities on every
// master, before and after every node's script cache is flushed. go-redis
// splits each pipeline per node; every decision must still be exact.
func TestPipelineCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3).Client(t)
	ctx := context.Background()
	// A token an hour refills: a slow machine between the calls of a round
	// cannot change the expected counts.
	l := mustNew(t, c, PerDay(100), WithTimeout(5*time.Second))
	const ids = 60
	for round := range 2 {
		if round == 1 {
			if err := c.ScriptFlush(ctx).Err(); err != nil { // every master
				t.Fatal(err)
			}
		}
		// Concurrent calls: identity i spends 1 per round.
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := l.Allow(ctx, "id-"+strconv.Itoa(i))
				if err != nil || !res.Allowed || res.Remaining != int64(100-1-3*round) {
					t.Errorf("round %d, Allow(id-%d): %+v %v", round, i, res, err)
				}
			}()
		}
		wg.Wait()
		// A batch: identity i spends 2 per round.
		reqs := make([]Request, ids)
		for i := range reqs {
			reqs[i] = Request{Identity: "id-" + strconv.Itoa(i), Cost: 2}
		}
		if round == 1 {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		results, err := l.BatchAllow(ctx, reqs)
		if err != nil {
			t.Fatalf("round %d, BatchAllow: %v", round, err)
		}
		for i, res := range results {
			if !res.Allowed || res.Remaining != int64(100-3-3*round) {
				t.Errorf("round %d, batch item %d: %+v", round, i, res)
			}
		}
	}
	// The identities spread over all three masters.
	var mu sync.Mutex
	perNode := map[string]int64{}
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		perNode[m.Options().Addr] = n
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for addr, n := range perNode {
		if n == 0 {
			t.Errorf("master %s holds no identity: %v", addr, perNode)
		}
		total += n
	}
	if total != ids {
		t.Errorf("%d keys on the cluster, want %d", total, ids)
	}
}
