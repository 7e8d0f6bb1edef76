package ratelimit_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
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
	if testing.Short() {
		t.Skip("multi-process load test skipped in -short mode")
	}
	srv := redistest.Start(t)
	bin := buildLoadProc(t)
	const (
		procs      = 4
		goroutines = 25
		rate       = 200
		burst      = 100 // half a second of refill: short stalls lose no tokens
		runFor     = 2 * time.Second
	)
	startAt := time.Now().Add(300 * time.Millisecond) // processes start together
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*bytes.Buffer, procs)
	for i := range cmds {
		outs[i] = new(bytes.Buffer)
		cmds[i] = exec.Command(bin, "-redis", srv.Addr, "-goroutines", strconv.Itoa(goroutines),
			"-duration", runFor.String(), "-rate", strconv.Itoa(rate), "-burst", strconv.Itoa(burst),
			"-start-at", strconv.FormatInt(startAt.UnixMilli(), 10))
		cmds[i].Stdout = outs[i]
		var stderr bytes.Buffer
		cmds[i].Stderr = &stderr
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var total loadReport
	var first, last int64
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("process %d: %v", i, err)
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
	t.Logf("%d processes × %d goroutines: allowed %d, denied %d, errors %d; bound %d over %v of Redis TIME (%.1f%% of bound)",
		procs, goroutines, total.Allowed, total.Denied, total.Errors, bound, elapsed.Round(time.Millisecond),
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
