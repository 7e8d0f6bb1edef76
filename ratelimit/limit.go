package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// maxExact is the largest integer a Lua double (and so every script) holds
// exactly: 2^53 - 1.
const maxExact = 1<<53 - 1

// Limit is a rate: Rate units of cost per Per, with room for bursts of up to
// Burst units. A Burst of 0 means Burst equals Rate.
//
// With the token bucket, a bucket holds at most Burst tokens and refills
// continuously at Rate per Per; a decision of cost n takes n tokens, or none
// when fewer than n are left. 100 a minute with bursts of 200:
//
//	ratelimit.PerMinute(100).WithBurst(200)
//
// The zero Limit is invalid. A Limit is a plain value, safe to copy and to
// compare with ==.
type Limit struct {
	// Rate is how many units of cost are granted per Per. It must be > 0.
	Rate int64
	// Per is the period Rate refers to. It must be a positive whole number
	// of microseconds (the resolution of Redis TIME).
	Per time.Duration
	// Burst is the most cost that can be spent at once, the capacity of the
	// bucket. 0 means Rate; otherwise it must be > 0.
	Burst int64
}

// PerSecond returns a Limit of rate units per second, with a burst of rate.
func PerSecond(rate int64) Limit { return Limit{Rate: rate, Per: time.Second} }

// PerMinute returns a Limit of rate units per minute, with a burst of rate.
func PerMinute(rate int64) Limit { return Limit{Rate: rate, Per: time.Minute} }

// PerHour returns a Limit of rate units per hour, with a burst of rate.
func PerHour(rate int64) Limit { return Limit{Rate: rate, Per: time.Hour} }

// PerDay returns a Limit of rate units per 24 hours, with a burst of rate.
func PerDay(rate int64) Limit { return Limit{Rate: rate, Per: 24 * time.Hour} }

// WithBurst returns a copy of l with Burst set to burst.
func (l Limit) WithBurst(burst int64) Limit {
	l.Burst = burst
	return l
}

// Capacity returns the effective burst: Burst, or Rate when Burst is 0.
func (l Limit) Capacity() int64 {
	if l.Burst == 0 {
		return l.Rate
	}
	return l.Burst
}

// String formats l as "100/1m0s burst 200" (the burst is always shown).
func (l Limit) String() string {
	return strconv.FormatInt(l.Rate, 10) + "/" + l.Per.String() + " burst " + strconv.FormatInt(l.Capacity(), 10)
}

// Validate reports whether l can be enforced by the token bucket (the
// default algorithm; see Algorithm.Validate for the others). The error wraps
// ErrInvalidLimit and names the bad field and value.
func (l Limit) Validate() error {
	_, err := l.units()
	return err
}

// units is a Limit reduced to the integers the token-bucket script works in:
// a token is per units, the bucket gains rate units every microsecond and
// holds capacity*per units.
type units struct {
	rate     int64 // units per microsecond
	per      int64 // units per token
	capacity int64 // tokens
}

// checkBasic checks what every algorithm needs: a positive rate, a positive
// whole number of microseconds per period, a non-negative burst.
func (l Limit) checkBasic() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("%w: rate %d must be > 0", ErrInvalidLimit, l.Rate)
	case l.Per <= 0:
		return fmt.Errorf("%w: per %v must be > 0", ErrInvalidLimit, l.Per)
	case l.Per%time.Microsecond != 0:
		return fmt.Errorf("%w: per %v must be a whole number of microseconds", ErrInvalidLimit, l.Per)
	case l.Burst < 0:
		return fmt.Errorf("%w: burst %d must be >= 0 (0 means rate)", ErrInvalidLimit, l.Burst)
	}
	return nil
}

func (l Limit) units() (units, error) {
	if err := l.checkBasic(); err != nil {
		return units{}, err
	}
	perUS := l.Per.Microseconds()
	g := gcd(l.Rate, perUS)
	u := units{rate: l.Rate / g, per: perUS / g, capacity: l.Capacity()}
	if u.rate > maxExact || u.per > maxExact || u.capacity > maxExact/u.per {
		return units{}, fmt.Errorf("%w: %v is too fine-grained to count exactly (burst × per/rate in µs must stay below 2^53)", ErrInvalidLimit, l)
	}
	return u, nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// durationUS converts script microseconds to a Duration, saturating rather
// than overflowing.
func durationUS(us int64) time.Duration {
	if us <= 0 {
		return 0
	}
	if us > math.MaxInt64/int64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
}
