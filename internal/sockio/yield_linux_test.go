package sockio

import (
	"testing"
	"time"
)

// A yield that comes back at once leaves the next ones alone; one that
// takes longer than yieldTooLong (something else had the CPU for a whole
// time slice) turns yielding off for yieldPause.
func TestYieldCPUPausesAfterALongYield(t *testing.T) {
	calls := 0
	took := time.Duration(0)
	old := schedYield
	schedYield = func() { calls++; time.Sleep(took) }
	t.Cleanup(func() { schedYield = old; yieldPausedUntil.Store(0) })
	yieldPausedUntil.Store(0)

	for range 3 {
		YieldCPU()
	}
	if calls != 3 {
		t.Fatalf("short yields: %d system calls, want 3", calls)
	}

	took = 2 * yieldTooLong
	YieldCPU()
	took = 0
	for range 3 {
		YieldCPU()
	}
	if calls != 4 {
		t.Fatalf("after a long yield: %d system calls, want 4 (the long one only)", calls)
	}
	if left := time.Duration(yieldPausedUntil.Load() - monoNow()); left <= yieldPause/2 || left > yieldPause {
		t.Fatalf("yields paused for another %v, want about %v", left, yieldPause)
	}

	yieldPausedUntil.Store(monoNow() - 1) // the pause is over
	YieldCPU()
	if calls != 5 {
		t.Fatalf("after the pause: %d system calls, want 5", calls)
	}
}
