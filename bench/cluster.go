package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// cluster is a Redis Cluster of masters without replicas that the benchmark
// started on loopback: as internal/redistest.StartCluster makes them for
// the tests (which takes a testing.TB, so it cannot serve here).
type cluster struct {
	nodes []*server
}

// errNoCluster marks a cluster that could not be had on this machine (no
// redis-cli, no cluster support): the section is skipped, not failed,
// unless RATELIMIT_REQUIRE_REDIS=1.
var errNoCluster = errors.New("no Redis Cluster on this machine")

// startCluster starts masters redis-servers in cluster mode, persistence
// off, each on a free loopback port with a free bus port, and assigns them
// the 16384 slots in equal ranges: with redis-cli --cluster create for 3 or
// more masters (as a user would, and as the tests do), with CLUSTER
// ADDSLOTS for one master (redis-cli refuses fewer than 3). It returns once
// every node reports cluster_state:ok, every slot assigned and every node
// known, within 30 s. On error, whatever it started is stopped.
func startCluster(ctx context.Context, masters int) (_ *cluster, err error) {
	c := &cluster{}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	var cli string
	if masters > 1 {
		if cli, err = exec.LookPath("redis-cli"); err != nil {
			return nil, fmt.Errorf("%w: redis-cli not found (apt-get install -y redis-tools): %v", errNoCluster, err)
		}
	}
	for range masters {
		s, err := startNode()
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if masters == 1 {
		node := redis.NewClient(&redis.Options{Addr: c.nodes[0].addr, ContextTimeoutEnabled: true})
		defer node.Close()
		args := []any{"CLUSTER", "ADDSLOTS"}
		for slot := range 16384 {
			args = append(args, slot)
		}
		if err := node.Do(ctx, args...).Err(); err != nil {
			return nil, fmt.Errorf("CLUSTER ADDSLOTS on %s: %w", c.nodes[0].addr, err)
		}
	} else {
		args := append([]string{"--cluster", "create"}, c.addrs()...)
		args = append(args, "--cluster-replicas", "0", "--cluster-yes")
		if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
		}
	}
	return c, c.waitOK(ctx)
}

// startNode starts one cluster-mode redis-server. The bus port is chosen
// free too (the default, port+10000, may be taken or past 65535).
func startNode() (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (apt-get install -y redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "ratelimit-bench-cluster-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err1 := freePort()
		bus, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--loglevel", "warning",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000")
		// Killed with the benchmark, whatever ends it (a signal, a crash):
		// no node outlives the run.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir, owned: true}
		if lastErr = waitPing(s.addr, 10*time.Second); lastErr == nil {
			return s, nil
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.Remove(dir + "/nodes.conf")
	}
	os.RemoveAll(dir)
	if lastErr != nil && strings.Contains(lastErr.Error(), "cluster") {
		return nil, fmt.Errorf("%w: %v", errNoCluster, lastErr)
	}
	return nil, fmt.Errorf("cluster node did not start: %w", lastErr)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *cluster) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr
	}
	return out
}

// waitOK polls CLUSTER INFO on every node until each reports the cluster
// ok, every slot assigned and every node known. A server built without
// cluster support answers with an error, which is errNoCluster.
func (c *cluster) waitOK(ctx context.Context) error {
	want := []string{
		"cluster_state:ok",
		"cluster_slots_assigned:16384",
		"cluster_slots_ok:16384",
		"cluster_known_nodes:" + strconv.Itoa(len(c.nodes)),
	}
	for _, n := range c.nodes {
		node := redis.NewClient(&redis.Options{Addr: n.addr, ContextTimeoutEnabled: true})
		for {
			txt, err := node.ClusterInfo(ctx).Result()
			if err == nil && containsAll(txt, want) {
				break
			}
			if err != nil && strings.Contains(err.Error(), "cluster support disabled") {
				node.Close()
				return fmt.Errorf("%w: %v", errNoCluster, err)
			}
			select {
			case <-ctx.Done():
				node.Close()
				return fmt.Errorf("cluster node %s not ready: %v (%v)\n%s", n.addr, context.Cause(ctx), err, txt)
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

// stop kills every node and removes its files. Stopping twice is harmless.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.stop()
	}
	c.nodes = nil
}
