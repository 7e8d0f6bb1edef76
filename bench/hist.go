package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram: 64 buckets per power of two, so a
// percentile is within 1.6% of the true value. Recording never allocates.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSub     = 64
	histBuckets = histSub + 40*histSub // up to 2^46 ns, about 19 hours
)

func histIndex(ns uint64) int {
	if ns < 2*histSub {
		return int(ns)
	}
	e := bits.Len64(ns) - 7 // ns>>e is in [64, 128)
	i := histSub + e*histSub + int(ns>>e) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histLow returns the smallest value of bucket i.
func histLow(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := (i - histSub) / histSub
	return uint64((i-histSub)%histSub+histSub) << e
}

func (h *hist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1): the middle of the bucket
// holding the ceil(q*n)-th smallest value.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return time.Duration(histLow(histBuckets - 1))
}
