//go:build race

package cache

// raceEnabled: the race detector slows byte loops many times over, so the
// slice tests use smaller objects under it.
const raceEnabled = true
