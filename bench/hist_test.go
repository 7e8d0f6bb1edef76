package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestHistBuckets: every value falls in the bucket whose bounds hold it.
func TestHistBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 127, 128, 129, 255, 256, 1000, 12345, 1 << 20, 987654321, 1 << 40} {
		i := histIndex(v)
		if lo, hi := histLow(i), histLow(i+1); v < lo || v >= hi {
			t.Errorf("%d in bucket %d = [%d, %d)", v, i, lo, hi)
		}
	}
}

// TestHistQuantile compares quantiles with the exact ones of a sample.
func TestHistQuantile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h hist
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(20000 + r.ExpFloat64()*30000) // ~20µs + exp tail
		h.record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: %v, exact %v (%.1f%% off)", q, got, exact, 100*diff)
		}
	}
}
