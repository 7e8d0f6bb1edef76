//go:build race

package ratelimit

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true
