package testkit

import (
	"sync/atomic"
	"testing"
)

// CountCalls replaces the function in *fn with one that only counts its
// calls, until the test ends. fn is package state (a hook such as
// yieldCPU), so the test must not run in parallel with others that use it.
// Call it before starting what calls *fn: its cleanup, registered first,
// then runs after theirs.
func CountCalls(t testing.TB, fn *func()) *atomic.Int64 {
	var n atomic.Int64
	old := *fn
	*fn = func() { n.Add(1) }
	t.Cleanup(func() { *fn = old })
	return &n
}
