package telemetrykit

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// TestCOWMap: concurrent first uses of a key build it once, and every
// caller gets that one value.
func TestCOWMap(t *testing.T) {
	var m COWMap[string, *int]
	var builds atomic.Int64
	var wg sync.WaitGroup
	got := make([]*int, 32)
	for i := range got {
		wg.Go(func() {
			got[i] = m.LoadOrBuild("k", func() *int { builds.Add(1); return new(int) })
		})
	}
	wg.Wait()
	if builds.Load() != 1 {
		t.Fatalf("%d builds of one key", builds.Load())
	}
	for _, v := range got {
		if v != got[0] {
			t.Fatal("callers got different values for one key")
		}
	}
	if _, ok := m.Load("other"); ok {
		t.Fatal("a key never stored was found")
	}
}

// TestByOutcome: a value per decision and reason, built once; a reason past
// the cache is built every time.
func TestByOutcome(t *testing.T) {
	var c ByOutcome[string]
	builds := 0
	build := func(s string) func() string { return func() string { builds++; return s } }
	a := c.Get(true, ratelimit.ReasonQuota, build("allowed quota"))
	b := c.Get(false, ratelimit.ReasonQuota, build("blocked quota"))
	if *a != "allowed quota" || *b != "blocked quota" || c.Get(true, ratelimit.ReasonQuota, build("x")) != a || builds != 2 {
		t.Fatalf("values %q %q after %d builds", *a, *b, builds)
	}
	c.Get(true, ratelimit.Reason(200), build("far"))
	c.Get(true, ratelimit.Reason(200), build("far"))
	if builds != 4 {
		t.Fatalf("%d builds, want the uncached reason built each time", builds)
	}
	var e ByErrorType[int]
	n := 0
	if *e.Get(ratelimit.ErrorTimeout, func() int { n++; return 7 }) != 7 || *e.Get(ratelimit.ErrorTimeout, func() int { n++; return 8 }) != 7 || n != 1 {
		t.Fatal("ByErrorType did not keep its first value")
	}
}

// TestCOWMapAll: All yields every stored pair once, and stops when asked.
func TestCOWMapAll(t *testing.T) {
	var m COWMap[string, int]
	for range m.All() {
		t.Fatal("an empty map yielded a pair")
	}
	for i, k := range []string{"a", "b", "c"} {
		m.LoadOrBuild(k, func() int { return i })
	}
	got := map[string]int{}
	for k, v := range m.All() {
		if _, dup := got[k]; dup {
			t.Fatalf("%q yielded twice", k)
		}
		got[k] = v
	}
	if len(got) != 3 || got["a"] != 0 || got["b"] != 1 || got["c"] != 2 {
		t.Fatalf("All yielded %v", got)
	}
	n := 0
	for range m.All() {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("%d pairs after break, want 1", n)
	}
}
