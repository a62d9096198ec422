package upstream

import (
	"sync/atomic"
	"time"
)

// host is the runtime state of one address, shared by every pool (and every
// Upstream value) that proxies to it, so it survives reloads and discovery
// refreshes that still list the address.
type host struct {
	addr string
	refs int // guarded by the owning Registry's mutex

	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	lat      latency

	// upSince is when the address last became available again (monotonic,
	// see mono) and upGen counts such recoveries; slow start reads both.
	upSince atomic.Int64
	upGen   atomic.Uint32
}

func newHost(addr string) *host { return &host{addr: addr} }

// markRecovered starts a slow-start ramp for every pool member on this
// address.
func (h *host) markRecovered() {
	h.upSince.Store(mono())
	h.upGen.Add(1)
}

// epoch anchors mono. Internal deadlines use the monotonic clock so a wall
// clock step cannot lengthen or cut short an ejection.
var epoch = time.Now()

// mono is nanoseconds since epoch on the monotonic clock. It is never 0 in
// practice, which lets 0 mean "unset" in atomics holding it.
func mono() int64 { return int64(time.Since(epoch)) + 1 }

// wall converts a mono reading back to wall-clock time for status output.
func wall(m int64) time.Time { return epoch.Add(time.Duration(m - 1)) }
