//go:build race

package obsbench

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts through go-redis are not reproducible under -race.
const raceEnabled = true
