package upstream

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// PassiveHealth judges upstreams from the traffic a pool sends them and
// ejects the ones that fail. A zero field means its default.
type PassiveHealth struct {
	// FailWindow is how long a failure counts towards MaxFails (a sliding
	// window of ten buckets). Default 10s.
	FailWindow time.Duration
	// MaxFails ejects an upstream once this many failures fall within
	// FailWindow. Default 3; negative turns count-based ejection off (to
	// rely on FailureRatio alone).
	MaxFails int
	// UnhealthyStatus lists response statuses that count as failures. The
	// response itself is still delivered.
	UnhealthyStatus Statuses
	// UnhealthyLatency counts a response whose headers took longer than this
	// as a failure; 0 = off.
	UnhealthyLatency time.Duration
	// FailDuration is how long the first ejection lasts. Default 30s.
	FailDuration time.Duration
	// MaxEjectionTime caps the ejection time. Each ejection that follows
	// the end of the previous one within MaxEjectionTime lasts FailDuration
	// longer than it (n × FailDuration); after MaxEjectionTime without an
	// ejection the count starts again. Default 10 × FailDuration.
	MaxEjectionTime time.Duration
	// FailureRatio ejects an upstream when more than this fraction of its
	// last RatioWindow requests failed, once at least RatioMinRequests were
	// seen since it was last ejected. 0 = off; at most 1.
	FailureRatio float64
	// RatioWindow is how many recent requests FailureRatio looks at.
	// Default 100.
	RatioWindow int
	// RatioMinRequests is the fewest requests FailureRatio judges on.
	// Default 20.
	RatioMinRequests int
	// MaxEjectionPercent caps the share of a pool's upstreams that may be
	// ejected at once, so a global outage cannot empty the pool: failures
	// past the cap are counted but eject nothing. Default 50; a pool of two
	// or more may always eject one. 100 = no cap.
	MaxEjectionPercent int
}

// withDefaults returns a validated copy with defaults filled in.
func (c PassiveHealth) withDefaults() (PassiveHealth, error) {
	if c.FailWindow == 0 {
		c.FailWindow = 10 * time.Second
	}
	if c.MaxFails == 0 {
		c.MaxFails = 3
	}
	if c.FailDuration == 0 {
		c.FailDuration = 30 * time.Second
	}
	if c.MaxEjectionTime == 0 {
		c.MaxEjectionTime = 10 * c.FailDuration
	}
	if c.RatioWindow == 0 {
		c.RatioWindow = 100
	}
	if c.RatioMinRequests == 0 {
		c.RatioMinRequests = 20
	}
	if c.MaxEjectionPercent == 0 {
		c.MaxEjectionPercent = 50
	}
	switch {
	case c.FailWindow < 0:
		return c, fmt.Errorf("passive health: fail_window %v: must be positive", c.FailWindow)
	case c.FailDuration < 0:
		return c, fmt.Errorf("passive health: fail_duration %v: must be positive", c.FailDuration)
	case c.MaxEjectionTime < c.FailDuration:
		return c, fmt.Errorf("passive health: max_ejection_time %v: must be at least fail_duration (%v)", c.MaxEjectionTime, c.FailDuration)
	case c.UnhealthyLatency < 0:
		return c, fmt.Errorf("passive health: unhealthy_latency %v: must be positive, or 0 for off", c.UnhealthyLatency)
	case c.FailureRatio < 0 || c.FailureRatio > 1:
		return c, fmt.Errorf("passive health: failure_ratio %v: must be between 0 (off) and 1", c.FailureRatio)
	case c.RatioWindow < 1 || c.RatioWindow > 10000:
		return c, fmt.Errorf("passive health: ratio_window %d: must be 1 to 10000 requests", c.RatioWindow)
	case c.RatioMinRequests < 1:
		return c, fmt.Errorf("passive health: ratio_min_requests %d: must be at least 1", c.RatioMinRequests)
	case c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100:
		return c, fmt.Errorf("passive health: max_ejection_percent %d: must be 1 to 100", c.MaxEjectionPercent)
	case c.MaxFails < 0 && c.FailureRatio == 0:
		return c, fmt.Errorf("passive health: max_fails is off and failure_ratio is 0: nothing would ever eject")
	}
	if err := c.UnhealthyStatus.validate("passive health: unhealthy_status"); err != nil {
		return c, err
	}
	return c, nil
}

// key identifies the settings: pools with equal settings share one tracker
// per address.
func (c *PassiveHealth) key() string {
	return fmt.Sprintf("%d|%d|%s|%d|%d|%d|%g|%d|%d",
		c.FailWindow, c.MaxFails, c.UnhealthyStatus, c.UnhealthyLatency, c.FailDuration,
		c.MaxEjectionTime, c.FailureRatio, c.RatioWindow, c.RatioMinRequests)
}

// allowedEjections is how many of n upstreams may be ejected at once.
func (c *PassiveHealth) allowedEjections(n int) int {
	k := n * c.MaxEjectionPercent / 100
	if k == 0 && n > 1 {
		k = 1
	}
	return k
}

const (
	windowBuckets = 10
	countBits     = 20
	countMax      = 1<<countBits - 1
)

// passive tracks one address under one PassiveHealth. Recording an outcome is
// lock-free; only ejecting takes the mutex.
type passive struct {
	cfg  PassiveHealth
	key  string
	h    *host
	refs int // guarded by the Registry mutex

	// Failures per time bucket, each packed as epoch<<countBits | count so
	// one CAS both rolls a stale bucket over and counts.
	bucketDur int64
	buckets   [windowBuckets]atomic.Uint64

	// The last RatioWindow outcomes (1 = failed) and how many of them failed.
	ring      []atomic.Uint32
	ringNext  atomic.Uint64
	ringFails atomic.Int64
	seen      atomic.Int64 // outcomes since the last ejection

	until      atomic.Int64 // mono end of the current ejection; 0 = none
	suppressed atomic.Uint64

	mu        sync.Mutex
	subs      map[*Upstream]struct{} // members to flag when ejected
	ejections int                    // consecutive ejections, for the growing ejection time
	lastEnd   int64                  // mono end of the previous ejection
	total     int                    // ejections ever
}

func newPassive(h *host, cfg PassiveHealth, key string) *passive {
	p := &passive{cfg: cfg, key: key, h: h, bucketDur: int64(cfg.FailWindow) / windowBuckets, subs: map[*Upstream]struct{}{}}
	if p.bucketDur < 1 {
		p.bucketDur = 1
	}
	if cfg.FailureRatio > 0 {
		p.ring = make([]atomic.Uint32, cfg.RatioWindow)
	}
	return p
}

// bad reports whether o counts as a failure under these settings.
func (p *passive) bad(o Outcome) bool {
	switch o.Kind {
	case Failure:
		return true
	case Success:
		if o.Status != 0 && p.cfg.UnhealthyStatus.Match(o.Status) {
			return true
		}
		return p.cfg.UnhealthyLatency > 0 && o.Latency > p.cfg.UnhealthyLatency
	}
	return false
}

// record counts o at time now (mono). It reports whether o was a failure and
// whether the upstream crossed a threshold and should be ejected (the pool
// decides, under its ejection cap). Ignored outcomes never count.
func (p *passive) record(o Outcome, now int64) (bad, trip bool) {
	if o.Kind == Ignored {
		return false, false
	}
	bad = p.bad(o)
	// Answers to requests sent before an ejection say nothing new.
	if p.ejectedAt(now) {
		return bad, false
	}
	var v uint32
	if bad {
		v = 1
	}
	if p.ring != nil {
		i := p.ringNext.Add(1) - 1
		old := p.ring[i%uint64(len(p.ring))].Swap(v)
		p.ringFails.Add(int64(v) - int64(old))
		p.seen.Add(1)
	}
	if !bad {
		return bad, false
	}
	if n := p.addFailure(now); p.cfg.MaxFails > 0 && n >= p.cfg.MaxFails {
		return bad, true
	}
	return bad, p.ratioExceeded()
}

func (p *passive) ratioExceeded() bool {
	if p.ring == nil {
		return false
	}
	seen := p.seen.Load()
	if seen < int64(p.cfg.RatioMinRequests) {
		return false
	}
	n := min(seen, int64(len(p.ring)))
	return float64(p.ringFails.Load()) > p.cfg.FailureRatio*float64(n)
}

// addFailure counts one failure in the current bucket and returns the
// failures within the window.
func (p *passive) addFailure(now int64) int {
	e := uint64(now / p.bucketDur)
	b := &p.buckets[e%windowBuckets]
	for {
		old := b.Load()
		nv := e<<countBits | 1
		if old>>countBits == e {
			nv = old
			if old&countMax < countMax {
				nv++
			}
		}
		if b.CompareAndSwap(old, nv) {
			break
		}
	}
	return p.windowFailures(now)
}

func (p *passive) windowFailures(now int64) int {
	e := uint64(now / p.bucketDur)
	n := 0
	for i := range p.buckets {
		v := p.buckets[i].Load()
		if be := v >> countBits; be <= e && e-be < windowBuckets {
			n += int(v & countMax)
		}
	}
	return n
}

// ejected is the hot-path check: one atomic load unless an ejection is on
// record (small enough to inline; the rest is in endEjection).
func (p *passive) ejected() bool {
	u := p.until.Load()
	return u != 0 && p.endEjection(u)
}

// endEjection reports whether the ejection ending at u is still in force,
// and otherwise ends it, which starts slow start.
func (p *passive) endEjection(u int64) bool {
	now := mono()
	if now < u {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.until.Load() != u {
		return p.ejectedAt(now) // ended by another caller, or ejected anew
	}
	p.until.Store(0)
	for m := range p.subs {
		m.state.And(^stEjected)
	}
	p.h.markRecovered()
	return false
}

// subscribe makes m follow this tracker's verdict.
func (p *passive) subscribe(m *Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs[m] = struct{}{}
	if p.ejectedAt(mono()) {
		m.state.Or(stEjected)
	}
}

func (p *passive) unsubscribe(m *Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.subs, m)
}

// ejectedAt reports whether an ejection is in force at now, without ending
// it (used while counting for the cap).
func (p *passive) ejectedAt(now int64) bool {
	u := p.until.Load()
	return u != 0 && now < u
}

// eject starts an ejection at now and reports whether it did (false when one
// is already in force).
func (p *passive) eject(now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ejectedAt(now) {
		return false
	}
	n := p.ejections
	if p.lastEnd != 0 && now-p.lastEnd > int64(p.cfg.MaxEjectionTime) {
		n = 0
	}
	n++
	d := time.Duration(n) * p.cfg.FailDuration
	if d > p.cfg.MaxEjectionTime || d <= 0 {
		d = p.cfg.MaxEjectionTime
	}
	p.ejections = n
	p.total++
	p.lastEnd = now + int64(d)
	// Start the next judgement from a clean slate; otherwise the failures
	// that caused this ejection would eject the upstream again on its first
	// failure after it comes back.
	for i := range p.buckets {
		p.buckets[i].Store(0)
	}
	for i := range p.ring {
		p.ringFails.Add(-int64(p.ring[i].Swap(0)))
	}
	p.seen.Store(0)
	p.until.Store(p.lastEnd)
	for m := range p.subs {
		m.state.Or(stEjected)
	}
	return true
}

// PassiveStatus is the passive-health part of UpstreamStatus.
type PassiveStatus struct {
	Ejected bool `json:"ejected"`
	// EjectedUntil is set while Ejected.
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	// Ejections counts ejections in a row (it sets the ejection time);
	// TotalEjections counts all.
	Ejections      int `json:"ejections"`
	TotalEjections int `json:"total_ejections"`
	// RecentFailures is the failure count within FailWindow.
	RecentFailures int `json:"recent_failures"`
	// FailureRatio over the last RatioWindow requests; omitted when off.
	FailureRatio *float64 `json:"failure_ratio,omitempty"`
	// SuppressedEjections counts ejections the pool's cap refused.
	SuppressedEjections uint64 `json:"suppressed_ejections"`
}

func (p *passive) status(now int64) *PassiveStatus {
	p.mu.Lock()
	st := &PassiveStatus{Ejections: p.ejections, TotalEjections: p.total}
	p.mu.Unlock()
	if p.ejectedAt(now) {
		st.Ejected = true
		t := wall(p.until.Load())
		st.EjectedUntil = &t
	}
	st.RecentFailures = p.windowFailures(now)
	if p.ring != nil {
		r := 0.0
		if n := min(p.seen.Load(), int64(len(p.ring))); n > 0 {
			r = float64(p.ringFails.Load()) / float64(n)
		}
		st.FailureRatio = &r
	}
	st.SuppressedEjections = p.suppressed.Load()
	return st
}
