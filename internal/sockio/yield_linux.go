package sockio

import (
	"sync/atomic"
	"syscall"
	"time"
)

// YieldCPU offers the rest of this thread's time slice to whatever waits
// to run on its CPU, with one raw sched_yield(2); when nothing waits it
// returns at once.
//
// Why: a write that wakes a reader on the same machine (a client or an
// upstream on loopback, a sidecar) is a "sync" wake-up in Linux, which
// assumes the writer is about to sleep and may queue the reader on the
// writer's CPU. nginx and HAProxy do sleep next: their event loops go back
// to epoll_wait. A Go proxy does not: after the write it finishes the
// request's bookkeeping, parks the goroutine, checks timers, polls the
// network once without blocking and looks for work on other Ps before the
// thread blocks, and the reader waits through all of it or is moved to
// another, possibly halted, CPU. Yielding right after the write lets it
// run first. Callers yield only when the process has nothing else in
// flight: under load the thread has more work of its own, and a yield then
// costs a context switch for nothing (docs/performance.md, step 19).
//
// A woken reader runs for tens of microseconds and then waits again. When
// a yield takes longer than yieldTooLong, what ran was something else (a
// CPU-bound process on the same CPU, or a reader with long work to do),
// and the yield cost this thread a whole time slice: YieldCPU then does
// nothing for yieldPause, so that a busy neighbour does not lengthen the
// proxy's tail latency.
func YieldCPU() {
	start := monoNow()
	if start < yieldPausedUntil.Load() {
		return
	}
	schedYield()
	if end := monoNow(); end-start > int64(yieldTooLong) {
		yieldPausedUntil.Store(end + int64(yieldPause))
	}
}

const (
	yieldTooLong = time.Millisecond
	yieldPause   = time.Second
)

var (
	// yieldPausedUntil is the monoNow before which YieldCPU does nothing.
	yieldPausedUntil atomic.Int64
	// schedYield is the system call; tests replace it.
	schedYield = func() { syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }
	monoBase   = time.Now()
)

// monoNow reads the monotonic clock once (time.Since of a monotonic time).
func monoNow() int64 { return int64(time.Since(monoBase)) }
