// Package leaktest checks, after a package's tests, that they left no
// goroutine running (go.uber.org/goleak), allowing for goroutines that are
// already on their way out.
//
// The allowance is for go-redis: once a pool's dials have failed PoolSize
// times in a row (a test that stops Redis), the pool starts a goroutine that
// retries a dial every second until one succeeds or the pool is closed. A
// client closed by a test's cleanup can therefore leave it sleeping for up to
// a second, longer than goleak's own retries wait, though it then exits.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Grace is how long VerifyTestMain waits for leftover goroutines to end:
// longer than go-redis's one-second dial retry.
const Grace = 3 * time.Second

// VerifyTestMain runs the tests and, when they pass, fails the run if
// goroutines are still running once Grace has passed, printing them.
// Call it from TestMain.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := settle(Grace); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on a successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// settle polls goleak until it finds no leftover goroutine or within has
// passed, and returns its last finding.
func settle(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // polling: the goroutines end on their own
	}
}
