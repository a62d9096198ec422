package main

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// usage is a snapshot of the process's resources.
type usage struct {
	goroutines int
	rss        int64 // VmRSS, bytes
	hwm        int64 // VmHWM (peak RSS), bytes
	heapInuse  uint64
}

// measure collects garbage, returns freed memory to the OS, then reads the
// counters, so RSS reflects what is still reachable plus runtime overhead.
func measure() usage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm := procStatus()
	return usage{goroutines: runtime.NumGoroutine(), rss: rss, hwm: hwm, heapInuse: ms.HeapInuse}
}

// procStatus reads VmRSS and VmHWM from /proc/self/status (0 if unavailable).
func procStatus() (rss, hwm int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// settleGoroutines waits up to wait for the goroutine count to come down to
// limit, and returns the last count and how long it took.
func settleGoroutines(limit int, wait time.Duration) (int, time.Duration) {
	start := time.Now()
	for {
		n := runtime.NumGoroutine()
		if n <= limit || time.Since(start) >= wait {
			return n, time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const mib = 1 << 20
