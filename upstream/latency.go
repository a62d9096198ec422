package upstream

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

const (
	// latencyRing is how many recent samples the p99 is computed from.
	latencyRing = 256
	// ewmaAlpha weighs the newest sample; 0.1 smooths over ~10 requests.
	ewmaAlpha = 0.1
)

// latency keeps an exponentially weighted moving average and a ring of the
// most recent samples. Recording is lock-free (a CAS for the average, one
// atomic add and store for the ring); percentiles are computed only when
// status is read.
type latency struct {
	ewma atomic.Uint64 // float64 bits, nanoseconds; 0 = no sample yet
	next atomic.Uint64
	ring [latencyRing]atomic.Int64
}

func (l *latency) record(d time.Duration) {
	if d <= 0 {
		return
	}
	for {
		old := l.ewma.Load()
		v := float64(d)
		if old != 0 {
			f := math.Float64frombits(old)
			v = f + ewmaAlpha*(v-f)
		}
		if l.ewma.CompareAndSwap(old, math.Float64bits(v)) {
			break
		}
	}
	i := l.next.Add(1) - 1
	l.ring[i%latencyRing].Store(int64(d))
}

// snapshot returns the moving average, the 99th percentile of the recent
// samples and how many samples that percentile is based on.
func (l *latency) snapshot() (ewma, p99 time.Duration, n int) {
	ewma = time.Duration(math.Float64frombits(l.ewma.Load()))
	var buf [latencyRing]int64
	for i := range l.ring {
		if v := l.ring[i].Load(); v > 0 {
			buf[n] = v
			n++
		}
	}
	if n == 0 {
		return ewma, 0, 0
	}
	s := buf[:n]
	slices.Sort(s)
	// Nearest-rank percentile.
	k := int(math.Ceil(0.99*float64(n))) - 1
	return ewma, time.Duration(s[k]), n
}
