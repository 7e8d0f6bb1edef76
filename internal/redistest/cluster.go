package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters without replicas, started for a
// test: real redis-server processes in cluster mode on loopback, joined by
// redis-cli --cluster create.
type Cluster struct {
	// Masters are the nodes, each serving an even share of the 16384
	// slots.
	Masters []*Server
}

// StartCluster starts a cluster of masters (at least 3, the smallest Redis
// accepts) and returns once every node reports cluster_state:ok with all
// slots assigned and every node known; it stops the nodes when tb ends.
// Start-up takes a second or two and is bounded by 30 s. It skips (or fails
// under RATELIMIT_REQUIRE_REDIS=1) when redis-server or redis-cli is missing.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: a cluster needs at least 3 masters, not %d", masters)
	}
	cli := Binary(tb, "redis-cli")
	c := &Cluster{}
	for range masters {
		c.Masters = append(c.Masters, start(tb, nil, func() ([]string, error) {
			// The cluster bus listens on its own port; the default,
			// port+10000, may be taken or past 65535.
			bus, err := FreePort()
			if err != nil {
				return nil, fmt.Errorf("free bus port: %w", err)
			}
			return []string{
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000",
			}, nil
		}))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(ctx); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return c
}

// Addrs returns the nodes' "127.0.0.1:port" addresses.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.Addr
	}
	return addrs
}

// waitOK polls CLUSTER INFO on every node until each reports the cluster ok,
// every slot assigned and every node known.
func (c *Cluster) waitOK(ctx context.Context) error {
	want := []string{
		"cluster_state:ok",
		"cluster_slots_assigned:16384",
		"cluster_slots_ok:16384",
		"cluster_known_nodes:" + strconv.Itoa(len(c.Masters)),
	}
	for _, m := range c.Masters {
		node := redis.NewClient(&redis.Options{Addr: m.Addr, ContextTimeoutEnabled: true})
		for {
			info, err := node.ClusterInfo(ctx).Result()
			if err == nil && containsAll(info, want) {
				break
			}
			select {
			case <-ctx.Done():
				node.Close()
				return fmt.Errorf("cluster node %s not ready: %v\n%s", m.Addr, context.Cause(ctx), info)
			case <-time.After(10 * time.Millisecond):
			}
		}
		node.Close()
	}
	return nil
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// Client returns a go-redis ClusterClient on the cluster, with
// ContextTimeoutEnabled, closed when the test ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Slot returns the cluster slot of key, as the server computes it (CLUSTER
// KEYSLOT, hash tags included).
func (c *Cluster) Slot(ctx context.Context, key string) (int64, error) {
	node := redis.NewClient(&redis.Options{Addr: c.Masters[0].Addr, ContextTimeoutEnabled: true})
	defer node.Close()
	return node.ClusterKeySlot(ctx, key).Result()
}

// DBSize returns the number of keys on each master, in the order of Masters.
func (c *Cluster) DBSize(ctx context.Context) ([]int64, error) {
	sizes := make([]int64, len(c.Masters))
	for i, m := range c.Masters {
		node := redis.NewClient(&redis.Options{Addr: m.Addr, ContextTimeoutEnabled: true})
		n, err := node.DBSize(ctx).Result()
		node.Close()
		if err != nil {
			return nil, err
		}
		sizes[i] = n
	}
	return sizes, nil
}
