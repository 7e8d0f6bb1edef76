package ratelimit_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/redistest"
)

type loadReport struct {
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	Errors  int64 `json:"errors"`
	StartUS int64 `json:"start_us"`
	EndUS   int64 `json:"end_us"`
}

// buildLoadProc builds internal/loadproc once per test into a temp dir.
func buildLoadProc(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadproc")
	out, err := exec.Command("go", "build", "-o", bin, "../internal/loadproc").CombinedOutput()
	if err != nil {
		t.Fatalf("go build loadproc: %v\n%s", err, out)
	}
	return bin
}

// TestMultiProcessAdmission runs several OS processes, each with many
// goroutines, on one identity against one real redis-server, and checks that
// the sum of allowed decisions stays within the token bucket's bound,
// burst + rate × elapsed (+1), with elapsed measured on Redis TIME, and
// comes close to it.
func TestMultiProcessAdmission(t *testing.T) {
	skipShortUnlessRequired(t)
	srv := redistest.Start(t)
	runLoadProcs(t, srv.Addr, 4, 25, 2*time.Second)
}

// TestMultiProcessAdmissionCluster is TestMultiProcessAdmission against a
// real 3-master Redis Cluster: the processes reach the identity's slot
// through ClusterClients (MOVED redirections, a script cache per node), and
// the bound must hold just the same. Kept short for CI.
func TestMultiProcessAdmissionCluster(t *testing.T) {
	skipShortUnlessRequired(t)
	cluster := redistest.StartCluster(t, 3)
	runLoadProcs(t, strings.Join(cluster.Addrs(), ","), 3, 20, 1500*time.Millisecond)
}

// skipShortUnlessRequired skips a load test under -short, except when real
// Redis is required (RATELIMIT_REQUIRE_REDIS=1, as in CI): then nothing that
// needs Redis may skip.
func skipShortUnlessRequired(t *testing.T) {
	t.Helper()
	if testing.Short() && os.Getenv(redistest.RequireEnv) != "1" {
		t.Skip("multi-process load test skipped in -short mode")
	}
}

// runLoadProcs runs procs load processes of goroutines each on addrs (one
// address, or a Cluster's, comma-separated) for runFor, and checks the sum
// of their admissions against the bound on Redis's clock.
func runLoadProcs(t *testing.T, addrs string, procs, goroutines int, runFor time.Duration) {
	t.Helper()
	bin := buildLoadProc(t)
	const (
		rate  = 200
		burst = 100 // half a second of refill: short stalls lose no tokens
	)
	startAt := time.Now().Add(300 * time.Millisecond) // processes start together
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*bytes.Buffer, procs)
	errs := make([]*bytes.Buffer, procs)
	for i := range cmds {
		outs[i], errs[i] = new(bytes.Buffer), new(bytes.Buffer)
		cmds[i] = exec.Command(bin, "-redis", addrs, "-goroutines", strconv.Itoa(goroutines),
			"-duration", runFor.String(), "-rate", strconv.Itoa(rate), "-burst", strconv.Itoa(burst),
			"-start-at", strconv.FormatInt(startAt.UnixMilli(), 10))
		cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var total loadReport
	var first, last int64
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, errs[i])
		}
		var r loadReport
		if err := json.Unmarshal(outs[i].Bytes(), &r); err != nil {
			t.Fatalf("process %d output %q: %v", i, outs[i].String(), err)
		}
		total.Allowed += r.Allowed
		total.Denied += r.Denied
		total.Errors += r.Errors
		if first == 0 || r.StartUS < first {
			first = r.StartUS
		}
		last = max(last, r.EndUS)
	}
	// Every decision happened on Redis between the earliest start and the
	// latest end, as Redis TIME saw them.
	elapsed := time.Duration(last-first) * time.Microsecond
	bound := int64(burst) + int64(float64(rate)*elapsed.Seconds()) + 1
	t.Logf("FIGURES %d processes × %d goroutines on %d node(s): allowed %d, denied %d, errors %d; bound %d over %v of Redis TIME (%.1f%% of bound)",
		procs, goroutines, strings.Count(addrs, ",")+1, total.Allowed, total.Denied, total.Errors, bound, elapsed.Round(time.Millisecond),
		100*float64(total.Allowed)/float64(bound))
	if total.Errors != 0 {
		t.Errorf("%d backend errors", total.Errors)
	}
	if total.Allowed > bound {
		t.Fatalf("over-admission: %d allowed > bound %d", total.Allowed, bound)
	}
	if float64(total.Allowed) < 0.95*float64(bound) {
		t.Fatalf("allowed %d is under 95%% of the bound %d: under-admission, or too little load (%d denied)", total.Allowed, bound, total.Denied)
	}
}
