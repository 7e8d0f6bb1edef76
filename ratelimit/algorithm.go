package ratelimit

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/distributed-rate-limiter/ratelimit-go/lua"
)

// Algorithm selects how a Limiter counts. Every algorithm decides in one Lua
// script on Redis, timed by Redis TIME, and publishes the same Event shape;
// its String form names it in Redis keys and in metric labels.
//
// Which to choose:
//   - TokenBucket (the default) for most APIs: a steady rate with bursts up
//     to Burst, smooth refill, O(1), and the only one with a Burst separate
//     from Rate.
//   - SlidingWindow for "N per window" quotas without the double burst of a
//     fixed window at window edges, in O(1) memory; an approximation that
//     assumes the previous window's use was evenly spread.
//   - SlidingLog when a quota must never be exceeded in any window of
//     length Per (audits, contracts, small quotas): exact, but it stores one
//     entry per allowed call, so memory grows with the quota.
//   - FixedWindow for quotas that reset at fixed times (per calendar minute,
//     per UTC day), or to keep the semantics of a limiter being replaced
//     (ulule/limiter, Envoy's rate limit service).
//   - Concurrency (NewConcurrency, not WithAlgorithm) to bound work in
//     flight rather than its rate: GPU jobs, long requests.
//
// For the window algorithms (SlidingWindow, SlidingLog, FixedWindow) a
// Limit of Rate per Per is a quota of Rate units per window of length Per.
// They have no burst apart from the quota: Burst must be 0 or equal Rate,
// any other value is rejected with ErrInvalidLimit rather than ignored.
type Algorithm uint8

const (
	// TokenBucket (the default) refills a bucket of Burst tokens
	// continuously at Rate per Per; a call of cost n takes n tokens. It
	// allows bursts up to Burst and a long-run average of Rate per Per.
	// State: one short string per identity (level, time, scale), O(1)
	// per call.
	TokenBucket Algorithm = iota
	// SlidingWindow counts units in windows of length Per aligned to the
	// Unix epoch and allows a cost when the current window's count plus the
	// previous window's, weighted by how much of it the sliding window still
	// covers, stays within Rate. It smooths the edge bursts of FixedWindow
	// with the same O(1) memory (one small hash per identity); it may admit
	// slightly more or fewer than Rate in a given span of length Per when
	// the previous window's use was uneven.
	SlidingWindow
	// SlidingLog logs every allowed spend with its Redis time and allows a
	// cost when the units logged in the last Per, plus the cost, stay within
	// Rate: exact in every window of length Per. Memory is O(Rate) per
	// identity (a sorted set of at most Rate entries, one per allowed call;
	// fewer when calls cost more than 1), and each call costs O(log n) in
	// Redis plus the entries it expires.
	SlidingLog
	// FixedWindow counts units in windows of length Per aligned to the Unix
	// epoch (a per-day quota resets at 00:00 UTC) and allows up to Rate in
	// each. Simple and O(1), but a client can spend Rate at the end of one
	// window and Rate again at the start of the next.
	FixedWindow
	// Concurrency names the lease-based concurrency limiter built by
	// NewConcurrency. It bounds units in flight, not a rate, so it cannot be
	// chosen with WithAlgorithm.
	Concurrency
)

var algorithmNames = [...]string{"token_bucket", "sliding_window", "sliding_log", "fixed_window", "concurrency"}

// String returns the algorithm's name as used in keys and labels:
// "token_bucket", "sliding_window", "sliding_log", "fixed_window" or
// "concurrency".
func (a Algorithm) String() string {
	if a.valid() {
		return algorithmNames[a]
	}
	return "unknown"
}

func (a Algorithm) valid() bool { return int(a) < len(algorithmNames) }

// Validate reports whether limit can be enforced by a. The error wraps
// ErrInvalidLimit (or ErrInvalidOption for an unknown algorithm, or for
// Concurrency, which takes no Limit) and names the bad value.
func (a Algorithm) Validate(limit Limit) error {
	_, err := a.prepare(limit)
	return err
}

// The scripts, built once: redis.NewScript hashes the source.
var (
	decideScript      = redis.NewScript(lua.Decide())
	multiScript       = redis.NewScript(lua.Multi())
	concurrencyScript = redis.NewScript(lua.Concurrency())
)

// scriptID is the algorithm's id in decide.lua and multi.lua (ALGORITHMS in
// algorithms.lua): pinned here, independent of the order of the constants.
func (a Algorithm) scriptID() int64 {
	switch a {
	case TokenBucket:
		return 1
	case SlidingWindow:
		return 2
	case SlidingLog:
		return 3
	case FixedWindow:
		return 4
	}
	return 0
}

// twoKeys reports whether the algorithm keeps a second key beside the main
// one (<key>:meta, the same hash tag): a running sum next to a sorted set.
func (a Algorithm) twoKeys() bool { return a == SlidingLog || a == Concurrency }

// metaSuffix is appended to an identity's key to name its second key.
const metaSuffix = ":meta"

// maxWindowUS bounds Per for the window algorithms, so that now + 2 windows
// stays an exact integer in Lua (2^53 / 4 µs is about 71 years).
const maxWindowUS = maxExact / 4

// policy is a Limit prepared for an algorithm's script: the script's three
// limit parameters (ARGV[1..3]) and the largest cost a call may ask for.
type policy struct {
	a, b, c  int64
	capacity int64
}

// prepare validates limit for a and reduces it to the script's integers.
func (a Algorithm) prepare(limit Limit) (policy, error) {
	switch a {
	case TokenBucket:
		u, err := limit.units()
		if err != nil {
			return policy{}, err
		}
		return policy{a: u.rate, b: u.per, c: u.capacity, capacity: u.capacity}, nil
	case SlidingWindow, SlidingLog, FixedWindow:
		if err := limit.checkWindow(a); err != nil {
			return policy{}, err
		}
		perUS := limit.Per.Microseconds()
		if a == SlidingWindow {
			tick := windowTick(limit.Rate, perUS)
			return policy{a: limit.Rate, b: perUS / tick, c: tick, capacity: limit.Rate}, nil
		}
		return policy{a: limit.Rate, b: perUS, capacity: limit.Rate}, nil
	case Concurrency:
		return policy{}, fmt.Errorf("%w: the concurrency algorithm has no Limit: use NewConcurrency", ErrInvalidOption)
	}
	return policy{}, fmt.Errorf("%w: unknown algorithm %d", ErrInvalidOption, a)
}

// checkWindow validates a Limit for a window algorithm: Rate units per
// window of length Per, and no burst apart from the quota.
func (l Limit) checkWindow(a Algorithm) error {
	if err := l.checkBasic(); err != nil {
		return err
	}
	switch {
	case l.Burst != 0 && l.Burst != l.Rate:
		return fmt.Errorf("%w: burst %d differs from rate %d: %s grants Rate per window of Per and has no separate burst (leave Burst 0)",
			ErrInvalidLimit, l.Burst, l.Rate, a)
	case l.Rate > maxExact:
		return fmt.Errorf("%w: rate %d is above 2^53-1", ErrInvalidLimit, l.Rate)
	case l.Per.Microseconds() > maxWindowUS:
		return fmt.Errorf("%w: per %v is longer than %s allows (2^51 µs, about 71 years)", ErrInvalidLimit, l.Per, a)
	}
	return nil
}

// windowTick returns the time step, in µs, in which the sliding window
// weighs the previous window: 1 µs unless rate × (window in µs) could pass
// 2^53, then the smallest power of ten dividing the window that keeps the
// product exact (a 1,000,000-a-day quota counts in 10 µs ticks), or the
// whole window as a last resort.
func windowTick(rate, perUS int64) int64 {
	for tick := int64(1); tick <= perUS && perUS%tick == 0; tick *= 10 {
		if perUS/tick <= maxExact/rate {
			return tick
		}
	}
	return perUS
}
