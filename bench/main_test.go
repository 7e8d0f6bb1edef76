package main

import (
	"testing"
	"time"
)

// TestCellKey: a cell survives -json and -render, and the keys of runs from
// before the setups read as the per-case setup.
func TestCellKey(t *testing.T) {
	for _, c := range []cell{
		{Case: "ratelimit", Setup: shared, Keys: 10000, Conc: 64},
		{Case: "ratelimit-sliding_log", Setup: perCase, Keys: 1, Conc: 1},
	} {
		got, err := parseCell(c.String())
		if err != nil || got != c {
			t.Errorf("parseCell(%q) = %+v, %v; want %+v", c.String(), got, err, c)
		}
	}
	got, err := parseCell("redis_rate/keys=10000/conc=16")
	if want := (cell{Case: "redis_rate", Setup: perCase, Keys: 10000, Conc: 16}); err != nil || got != want {
		t.Errorf("old key: %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"ratelimit", "ratelimit/setup=shared", "ratelimit/keys=x/conc=1"} {
		if _, err := parseCell(bad); err == nil {
			t.Errorf("parseCell(%q): no error", bad)
		}
	}
}

// TestAbuseMix: one call in every is from a good identity, each good
// identity comes once, every abuser comes about as often as the others.
func TestAbuseMix(t *testing.T) {
	m := &abuseMix{abusers: 16, good: 1000, every: 10, limit: theAbuse.limit}
	keys, who := m.keys()
	if len(keys) != m.good*m.every || len(who) != len(keys) {
		t.Fatalf("%d keys, %d owners; want %d", len(keys), len(who), m.good*m.every)
	}
	goods := map[string]bool{}
	perAbuser := make([]int, m.abusers)
	for i, k := range keys {
		if who[i] < 0 {
			if goods[k] {
				t.Fatalf("good identity %s twice", k)
			}
			goods[k] = true
			continue
		}
		perAbuser[who[i]]++
	}
	if len(goods) != m.good {
		t.Errorf("%d good identities; want %d", len(goods), m.good)
	}
	for a, n := range perAbuser {
		if want := (m.every - 1) * m.good / m.abusers; n < want-1 || n > want+1 {
			t.Errorf("abuser %d: %d calls; want %d±1", a, n, want)
		}
	}
	// burst 10 + 10/s × 1.55 s
	if got := m.bound(1550 * time.Millisecond); got != 25 {
		t.Errorf("bound(1.55 s) = %d; want 25", got)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.25, 3.25}, {0.5, 5.5}, {0.75, 7.75}, {0, 1}, {1, 10}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(1..10, %g) = %g; want %g", c.q, got, c.want)
		}
	}
	if got := quantile([]float64{4, 6, 9}, 0.5); got != 6 {
		t.Errorf("median of 4, 6, 9 = %g; want 6", got)
	}
}

// TestVerdictDigits: a ratio that two decimals would round onto the other
// side of its target gets a third, so that "0.90" never stands beside
// "missed" for a target of 0.90.
func TestVerdictDigits(t *testing.T) {
	atLeast := func(x float64) bool { return x >= 0.90 }
	atMost := func(x float64) bool { return x <= 1.1 }
	for _, c := range []struct {
		x    float64
		ok   func(float64) bool
		want string
	}{
		{0.8996, atLeast, "0.900"}, // rounds up onto the target: missed, so three digits
		{0.8949, atLeast, "0.89"},
		{0.93, atLeast, "0.93"},
		{1.1004, atMost, "1.100"}, // rounds down onto the target: missed
		{1.07, atMost, "1.07"},
	} {
		if got := verdictDigits(c.x, c.ok); got != c.want {
			t.Errorf("verdictDigits(%v) = %q, want %q", c.x, got, c.want)
		}
	}
}
