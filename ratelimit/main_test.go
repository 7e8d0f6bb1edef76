package ratelimit

import (
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// limiter starts one per call for clients that ignore deadlines.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
