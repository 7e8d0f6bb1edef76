// Package telemetrykit holds what the Prometheus and OpenTelemetry
// subscribers share: the duration buckets, a copy-on-write map of
// per-limiter values, and values built once per outcome (decision and
// reason) or error type. Subscribers run on the caller's goroutine for
// every decision, so every read here is an atomic load and no lock.
package telemetrykit

import (
	"iter"
	"sync"
	"sync/atomic"

	"github.com/distributed-rate-limiter/ratelimit-go/ratelimit"
)

// DurationBuckets are the bucket boundaries of the Redis round-trip
// histograms, in seconds: sub-millisecond resolution for healthy round
// trips (20 to 100 µs on loopback, a few hundred on a LAN), then up to the
// default backend timeout (100 ms) and beyond.
var DurationBuckets = []float64{
	0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
}

// COWMap is a map read with one atomic load and no allocation or lock; it
// is copied on write, which happens once per key (the keys, namespaces and
// algorithms, are bounded by the limiters a program creates).
type COWMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// Load returns k's value, and whether there is one.
func (c *COWMap[K, V]) Load(k K) (V, bool) {
	if m := c.m.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// LoadOrBuild returns k's value, building and storing it on first use.
func (c *COWMap[K, V]) LoadOrBuild(k K, build func() V) V {
	if v, ok := c.Load(k); ok {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]V, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	v := build()
	next[k] = v
	c.m.Store(&next)
	return v
}

// All yields every key and value stored so far, from one snapshot: a value
// stored meanwhile may be missed, never half seen.
func (c *COWMap[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		m := c.m.Load()
		if m == nil {
			return
		}
		for k, v := range *m {
			if !yield(k, v) {
				return
			}
		}
	}
}

// maxCached bounds the reasons and error types whose values are kept; a
// larger one (none today) is built on every event.
const maxCached = 16

// ByOutcome keeps one value per decision (allowed or blocked) and reason,
// built on first use, so that a new ratelimit.Reason needs no change here.
type ByOutcome[V any] struct {
	vals [2][maxCached]atomic.Pointer[V]
}

// Get returns the value of an outcome, building it on first use.
func (c *ByOutcome[V]) Get(allowed bool, r ratelimit.Reason, build func() V) *V {
	d := 0
	if allowed {
		d = 1
	}
	if int(r) >= maxCached {
		v := build()
		return &v
	}
	if v := c.vals[d][r].Load(); v != nil {
		return v
	}
	v := build()
	c.vals[d][r].Store(&v)
	return &v
}

// ByErrorType keeps one value per ratelimit.ErrorType, built on first use.
type ByErrorType[V any] struct {
	vals [maxCached]atomic.Pointer[V]
}

// Get returns the value of an error type, building it on first use.
func (c *ByErrorType[V]) Get(t ratelimit.ErrorType, build func() V) *V {
	if int(t) >= maxCached {
		v := build()
		return &v
	}
	if v := c.vals[t].Load(); v != nil {
		return v
	}
	v := build()
	c.vals[t].Store(&v)
	return &v
}

// Decision returns the decision label of an outcome: "allowed" or
// "blocked".
func Decision(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "blocked"
}
