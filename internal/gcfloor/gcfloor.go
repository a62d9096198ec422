// Package gcfloor keeps the garbage collector's heap goal at or above a
// floor.
//
// A proxy keeps little memory alive (under a megabyte between requests)
// and allocates a few kilobytes per request. Go sets the next collection
// at twice the live heap, but never below 4 MiB, so at 40,000 requests a
// second sluice collected about forty times a second and spent a sixth of
// its CPU on it. A floor of a few MiB makes that a few times a second,
// for that much more resident memory; above it, GOGC governs as usual.
//
// The runtime has no setting for this, so after every collection the
// floor sets GOGC to the smallest percentage that puts the next goal at
// the floor, or back to the base when twice the live heap is above it.
// It never makes the collector run more often than the base GOGC would.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// defaultHeapMinimum is the runtime's least heap goal at GOGC=100; it
// scales with GOGC (runtime/mgcpacer.go).
const defaultHeapMinimum = 4 << 20

// Percent is the GOGC value that puts the heap goal at floor, given the
// last collection's live heap and scanned stacks and globals, and never
// below base. The runtime's goal is
//
//	max(live + (live+stacks+globals)*GOGC/100, 4 MiB*GOGC/100)
//
// so either term can carry it to the floor; the smaller GOGC of the two
// is enough.
func Percent(floor, live, stacks, globals uint64, base int) int {
	if base < 0 || floor <= live {
		return base // GOGC=off, or the live heap alone reaches the floor
	}
	p := ceilDiv(floor*100, defaultHeapMinimum)
	if scan := live + stacks + globals; scan > 0 {
		if viaLive := ceilDiv((floor-live)*100, scan); viaLive < p {
			p = viaLive
		}
	}
	if p < uint64(base) {
		return base
	}
	const maxPercent = 1 << 20 // far above any real floor; keeps int conversion safe
	if p > maxPercent {
		p = maxPercent
	}
	return int(p)
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// Floor keeps the heap goal at or above a floor until Stop.
type Floor struct {
	floor   uint64
	base    int
	samples []metrics.Sample

	mu      sync.Mutex
	stopped bool // after Stop, and from Start on for a floor that does nothing
	percent int  // last set
}

// metric names, in the order Start reads them.
var names = [...]string{
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/gc/gogc:percent",
}

// active is set while a Floor runs: GOGC is one per process, and two
// floors would each restore the other's setting.
var active sync.Mutex

// Start keeps the heap goal at or above floor bytes, on top of the GOGC
// in effect now (the environment's, or 100). It does nothing, and returns
// a Floor whose Stop does nothing, when floor is 0, GOGC is off, or
// another Floor runs.
func Start(floor uint64) *Floor {
	f := &Floor{floor: floor, samples: make([]metrics.Sample, len(names))}
	for i, n := range names {
		f.samples[i].Name = n
	}
	metrics.Read(f.samples)
	f.base = -1 // GOGC=off reads as the uint64 of -1
	if gogc := f.value(3); gogc <= 1<<31 {
		f.base = int(gogc)
	}
	f.percent = f.base
	if floor == 0 || f.base < 0 || !active.TryLock() {
		f.stopped = true
		return f
	}
	f.adjust()
	f.watch()
	return f
}

// Stop ends the floor and puts GOGC back to what it was at Start.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return // never ran, or stopped already
	}
	f.stopped = true
	if f.percent != f.base {
		debug.SetGCPercent(f.base)
		f.percent = f.base
	}
	active.Unlock() // only a floor that runs holds it
}

// GOGC is the percentage the floor set last (the base when it set none).
func (f *Floor) GOGC() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

// value is sample i; all four are uint64 (0 if this runtime lacks it).
func (f *Floor) value(i int) uint64 {
	if v := f.samples[i].Value; v.Kind() == metrics.KindUint64 {
		return v.Uint64()
	}
	return 0
}

// adjust reads the last collection's figures and sets GOGC for the next.
// It reports whether the floor still runs.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.samples)
	p := Percent(f.floor, f.value(0), f.value(1), f.value(2), f.base)
	if p != f.percent {
		debug.SetGCPercent(p)
		f.percent = p
	}
	return true
}

// sentinel is unreachable as soon as it is made; the collection after
// that runs its cleanup. It holds a pointer so it is never one of the tiny
// allocations that cleanups cannot be attached to.
type sentinel struct {
	_ *byte
	_ uint64
}

// watch arranges for adjust to run after the next collection, and again
// after each one that follows, until Stop.
func (f *Floor) watch() {
	runtime.AddCleanup(new(sentinel), func(f *Floor) {
		if f.adjust() {
			f.watch()
		}
	}, f)
}
