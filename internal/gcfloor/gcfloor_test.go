package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

const mib = 1 << 20

// goal is the runtime's heap goal for a GOGC (runtime/mgcpacer.go).
func goal(live, scan uint64, percent int) uint64 {
	g := live + scan*uint64(percent)/100
	if m := uint64(defaultHeapMinimum) * uint64(percent) / 100; m > g {
		g = m
	}
	return g
}

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		name                         string
		floor, live, stacks, globals uint64
		base, want                   int
	}{
		{"idle proxy: the runtime's minimum carries the goal", 16 * mib, mib / 2, 64 << 10, 32 << 10, 100, 400},
		{"8 MiB floor", 8 * mib, mib / 2, 64 << 10, 32 << 10, 100, 200},
		{"live heap near the floor: the live term carries it", 16 * mib, 6 * mib, 0, 0, 100, 167},
		{"twice the live heap above the floor: the base", 16 * mib, 9 * mib, 0, 0, 100, 100},
		{"live heap above the floor", 16 * mib, 20 * mib, 0, 0, 100, 100},
		{"never below the operator's GOGC", 4 * mib, mib, 0, 0, 300, 300},
		{"GOGC=off stays off", 16 * mib, mib, 0, 0, -1, -1},
		{"no floor", 0, mib, 0, 0, 100, 100},
		{"nothing collected yet", 16 * mib, 0, 0, 0, 100, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Percent(c.floor, c.live, c.stacks, c.globals, c.base)
			if got != c.want {
				t.Fatalf("Percent = %d, want %d", got, c.want)
			}
			if got <= c.base {
				return
			}
			// The least GOGC that reaches the floor: one less falls short.
			scan := c.live + c.stacks + c.globals
			if g := goal(c.live, scan, got); g < c.floor {
				t.Errorf("goal at GOGC=%d is %d, below the floor %d", got, g, c.floor)
			}
			if g := goal(c.live, scan, got-1); g >= c.floor {
				t.Errorf("GOGC=%d already reaches the floor (goal %d): %d is not the least", got-1, g, got)
			}
		})
	}
}

var sink, live []byte

// churn allocates n bytes of garbage in 4 KiB pieces, as requests do.
func churn(n int) {
	for i := 0; i < n/4096; i++ {
		sink = make([]byte, 4096)
	}
	sink = nil
}

func readUint(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// cycles counts the collections that allocating n bytes of garbage takes.
func cycles(n int) uint64 {
	before := readUint("/gc/cycles/total:gc-cycles")
	churn(n)
	return readUint("/gc/cycles/total:gc-cycles") - before
}

// settle runs collections until the floor has seen one (its adjustment
// runs on the runtime's cleanup goroutine, after the collection).
func settle(t *testing.T, f *Floor, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 500 && time.Now().Before(deadline); i++ {
		runtime.GC()
		if f.GOGC() == want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("GOGC = %d after collections, want %d", f.GOGC(), want)
}

func TestFloorCutsCollections(t *testing.T) {
	const churnBytes = 96 * mib
	without := cycles(churnBytes)

	f := Start(32 * mib)
	defer f.Stop()
	settle(t, f, 800) // a small live heap: 32 MiB is 8 times the runtime's minimum
	if g := readUint("/gc/heap/goal:bytes"); g < 32*mib {
		t.Fatalf("heap goal %d with a 32 MiB floor", g)
	}
	with := cycles(churnBytes)
	t.Logf("collections for %d MiB of garbage: %d without a floor, %d with 32 MiB", churnBytes/mib, without, with)
	if with*3 > without {
		t.Fatalf("the floor should cut collections by far more: %d without, %d with", without, with)
	}

	// The floor follows the live heap, collection after collection: twice
	// a 24 MiB live heap is above it, so GOGC goes back to the base, and
	// comes back up when that memory is freed.
	live = make([]byte, 24*mib)
	settle(t, f, 100)
	live = nil
	settle(t, f, 800)

	f.Stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC after Stop = %d, want the 100 it was at Start", p)
	}
	runtime.GC()
	if g := readUint("/gc/heap/goal:bytes"); g >= 32*mib {
		t.Fatalf("heap goal %d after Stop, still at the floor", g)
	}
}

func TestFloorKeepsOperatorsGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	f := Start(32 * mib)
	defer f.Stop()
	if f.GOGC() != -1 {
		t.Fatalf("with GOGC=off the floor set GOGC=%d", f.GOGC())
	}
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("GOGC=off became %d", p)
	}

	debug.SetGCPercent(1000) // an operator's GOGC above what the floor needs
	g := Start(8 * mib)
	defer g.Stop()
	runtime.GC()
	if g.GOGC() != 1000 {
		t.Fatalf("the floor lowered GOGC=1000 to %d", g.GOGC())
	}
}

func TestZeroFloorDoesNothing(t *testing.T) {
	f := Start(0)
	defer f.Stop()
	runtime.GC()
	if p := debug.SetGCPercent(100); p != 100 || f.GOGC() != 100 {
		t.Fatalf("a zero floor changed GOGC: runtime %d, floor %d", p, f.GOGC())
	}
}

func TestOneFloorPerProcess(t *testing.T) {
	f := Start(32 * mib)
	defer f.Stop()
	settle(t, f, 800)
	g := Start(8 * mib) // would want 200, and restore 800 on Stop
	if g.GOGC() != 800 {
		t.Fatalf("a second floor reports GOGC=%d, want the running one's 800", g.GOGC())
	}
	g.Stop()
	if p := debug.SetGCPercent(800); p != 800 {
		t.Fatalf("stopping the second floor changed GOGC to %d", p)
	}
	f.Stop()
	h := Start(8 * mib) // the first one is gone: this one runs
	defer h.Stop()
	settle(t, h, 200)
}
