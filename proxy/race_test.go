//go:build race

package proxy_test

// raceEnabled: the race detector makes sync.Pool drop a quarter of what is
// put in it, at random, so pooled objects are sometimes allocated anew.
const raceEnabled = true
