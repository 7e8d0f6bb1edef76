package ratelimit

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// limiter starts one per call for clients that ignore deadlines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
