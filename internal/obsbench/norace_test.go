//go:build !race

package obsbench

const raceEnabled = false
