package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
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
	LoadBefore   string            `json:"load_before"`
	LoadAfter    string            `json:"load_after"`
	Started      time.Time         `json:"started"`
	Took         time.Duration     `json:"took_ns"`
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
		// Changes to the code measured (not to the report files) are noted.
		st, _ := exec.Command("git", "-C", "..", "status", "--porcelain", "--", "ratelimit", "lua", "bench", ":!bench/BENCHMARKS.md").Output()
		if len(strings.TrimSpace(string(st))) > 0 {
			e.Commit += " + uncommitted changes"
		}
	}
	return e, nil
}

func (e *environ) finish(began time.Time) {
	e.LoadAfter = loadAvg()
	e.Took = time.Since(began)
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
