package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// environ describes where and with what the benchmark ran.
type environ struct {
	CPUs         int               `json:"cpus"`
	CPUModel     string            `json:"cpu_model"`
	Kernel       string            `json:"kernel"`
	GoVersion    string            `json:"go"`
	RedisVersion string            `json:"redis"`
	Modules      map[string]string `json:"modules"`
	Commit       string            `json:"commit,omitempty"`
	// CoreCommit is the last commit that changed the code measured (the
	// library and its scripts): unlike Commit, it survives a rebase of
	// benchmark-only commits onto it.
	CoreCommit string `json:"core_commit,omitempty"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	// OtherCPU is the CPU (in cores, averaged over the run) used by
	// processes other than the benchmark and its redis-server: how much
	// the machine was shared while the figures were taken.
	OtherCPU float64 `json:"other_cpu_cores"`
	// SharedPoolSize is the PoolSize go-redis chose for the shared setup's
	// client (10 per GOMAXPROCS).
	SharedPoolSize int `json:"shared_pool_size"`
	// Shards is the sharded-buckets section's setting, when it was
	// selected.
	Shards *shardEnv `json:"shards,omitempty"`
	// extraRedisCPU is the CPU seconds of the Redis Cluster nodes the
	// benchmark started (and stopped) during the run: its own, not other
	// processes'.
	extraRedisCPU float64
	cpu0          cpuSample
	Started       time.Time     `json:"started"`
	Took          time.Duration `json:"took_ns"`
}

func environment(ctx context.Context, admin *redis.Client) (*environ, error) {
	e := &environ{
		CPUs:       runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		Kernel:     readTrim("/proc/sys/kernel/osrelease"),
		LoadBefore: loadAvg(),
		Started:    time.Now().UTC(),
		Modules:    map[string]string{},
	}
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(cpuinfo), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	srv, err := info(ctx, admin, "server")
	if err != nil {
		return nil, err
	}
	e.RedisVersion = srv["redis_version"]
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			v := d.Version
			if d.Replace != nil {
				v = "local (" + d.Replace.Path + ")"
			}
			switch d.Path {
			case "github.com/redis/go-redis/v9", "github.com/go-redis/redis_rate/v10",
				"github.com/ulule/limiter/v3", "github.com/throttled/throttled/v2",
				"github.com/distributed-rate-limiter/ratelimit-go":
				e.Modules[d.Path] = v
			}
		}
	}
	if out, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output(); err == nil {
		e.Commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%h", "--", "ratelimit", "lua", "telemetry", "internal", "go.mod", "go.sum").Output(); err == nil {
			e.CoreCommit = strings.TrimSpace(string(out))
		}
		// Changes to the code measured (not to the report files) are noted.
		st, _ := exec.Command("git", "-C", "..", "status", "--porcelain", "--", "ratelimit", "lua", "telemetry", "internal", "bench", ":!bench/BENCHMARKS.md", ":!bench/SHARDS-SECTION.md").Output()
		if len(strings.TrimSpace(string(st))) > 0 {
			e.Commit += " + uncommitted changes"
		}
	}
	return e, nil
}

// cpuSample is the machine's busy CPU time, this process's and Redis's, at
// one moment, in seconds.
type cpuSample struct {
	at                   time.Time
	machine, self, redis float64
}

func sampleCPU(ctx context.Context, admin *redis.Client) cpuSample {
	s := cpuSample{at: time.Now()}
	// /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
	if f := strings.Fields(strings.SplitN(readTrim("/proc/stat"), "\n", 2)[0]); len(f) > 8 && f[0] == "cpu" {
		var busy float64
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			v, _ := strconv.ParseFloat(f[i], 64)
			busy += v
		}
		s.machine = busy / 100 // USER_HZ
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	s.redis, _ = cpuSeconds(ctx, admin)
	return s
}

func (e *environ) start(ctx context.Context, admin *redis.Client) {
	e.cpu0 = sampleCPU(ctx, admin)
}

func (e *environ) finish(ctx context.Context, admin *redis.Client, began time.Time) {
	e.LoadAfter = loadAvg()
	e.Took = time.Since(began)
	s := sampleCPU(ctx, admin)
	if secs := s.at.Sub(e.cpu0.at).Seconds(); secs > 0 && e.cpu0.machine > 0 {
		other := (s.machine - e.cpu0.machine) - (s.self - e.cpu0.self) - (s.redis - e.cpu0.redis) - e.extraRedisCPU
		e.OtherCPU = max(other, 0) / secs
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
