package ratelimit

import (
	"testing"
	"time"
)

func TestLimitUnits(t *testing.T) {
	cases := []struct {
		lim       Limit
		rate, per int64
	}{
		{PerSecond(10), 1, 100000},
		{PerMinute(60), 1, 1000000},
		{PerMinute(7), 7, 60000000},
		{PerDay(10000), 1, 8640000},
		{Limit{Rate: 3, Per: time.Microsecond}, 3, 1},
	}
	for _, c := range cases {
		u, err := c.lim.units()
		if err != nil {
			t.Fatalf("%v: %v", c.lim, err)
		}
		if u.rate != c.rate || u.per != c.per || u.capacity != c.lim.Rate {
			t.Errorf("%v: units %+v, want rate %d per %d capacity %d", c.lim, u, c.rate, c.per, c.lim.Rate)
		}
	}
	if PerSecond(5).WithBurst(9).Capacity() != 9 || PerSecond(5).Capacity() != 5 {
		t.Error("Capacity")
	}
	// The largest exact capacity is accepted, one more token is not.
	lim := Limit{Rate: 1, Per: time.Microsecond, Burst: maxExact}
	if err := lim.Validate(); err != nil {
		t.Errorf("%v: %v", lim, err)
	}
	lim = Limit{Rate: 1, Per: 2 * time.Microsecond, Burst: maxExact/2 + 1}
	if err := lim.Validate(); err == nil {
		t.Errorf("%v accepted", lim)
	}
}
