package leaktest

import (
	"testing"
	"time"
)

// TestSettle: a goroutine that stays blocked is reported; one that ends
// within the grace period, as go-redis's dial retry does after its pool is
// closed, is waited for and not reported.
func TestSettle(t *testing.T) {
	stop := make(chan struct{})
	go func() { <-stop }()
	if err := settle(300 * time.Millisecond); err == nil {
		t.Fatal("a goroutine blocked for good was not reported")
	}
	time.AfterFunc(500*time.Millisecond, func() { close(stop) }) // it ends on its own, later
	if err := settle(Grace); err != nil {
		t.Fatalf("a goroutine that ended within %v was reported: %v", Grace, err)
	}
}
