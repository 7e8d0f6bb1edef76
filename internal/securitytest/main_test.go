package securitytest

import (
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
