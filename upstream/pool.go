package upstream

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoUpstream is returned by Pool.Select when no upstream is usable. The
// proxy answers it with 503. Errors that say more (every upstream full, the
// client gave up while waiting) wrap it.
var ErrNoUpstream = errors.New("no upstream available")

// errAllFull is ErrNoUpstream when every healthy upstream is at MaxRequests.
var errAllFull = fmt.Errorf("%w: every healthy upstream is at its request limit", ErrNoUpstream)

// PoolConfig describes a pool for NewPoolWith. Only Upstreams or Discovery
// is needed; every other field has a usable zero value.
type PoolConfig struct {
	// Policy picks among the usable upstreams. Default round robin.
	Policy Selector
	// Upstreams is a static member list. Leave it empty with Discovery.
	Upstreams []*Upstream
	// Discovery, when set, keeps the member list up to date from a Source
	// (DNS A/AAAA, DNS SRV, a static list).
	Discovery *Discovery
	// Registry holds the per-address state that survives reloads. Default
	// DefaultRegistry.
	Registry *Registry
	// Active turns on active health checks.
	Active *ActiveHealth
	// Passive turns on passive health checks and ejection.
	Passive *PassiveHealth
	// SlowStart ramps traffic to an upstream that comes back (from an
	// ejection, a failed active check, SetDown, or newly discovered) from
	// 10% to its full share over this long. 0 = off.
	SlowStart time.Duration
	// QueueTimeout is how long Select waits for a free slot when every
	// healthy upstream is at MaxRequests, before giving up with
	// ErrNoUpstream. 0 = do not wait.
	QueueTimeout time.Duration
}

// Pool is a set of upstreams and the policy that picks among them. The set
// can be replaced at run time (discovery, reload) without locking readers.
type Pool struct {
	policy Selector
	ups    atomic.Pointer[[]*Upstream]

	reg          *Registry // nil for NewPool: private state, no health
	active       *activeCheck
	passive      *PassiveHealth
	passiveKey   string
	slowStart    time.Duration
	queueTimeout time.Duration

	mu      sync.Mutex // membership: SetUpstreams, Close
	members map[*Upstream]struct{}
	closed  bool

	ejectMu sync.Mutex // ejection cap: count and eject as one step

	waitMu  sync.Mutex
	waitCh  chan struct{} // closed by Release to wake waiters
	waiters atomic.Int32

	disc *discoverer
}

// NewPool returns a pool using policy (round robin when nil) over ups, with
// no health checking. Its upstreams' counters are private to it (not in a
// Registry) and it starts no goroutine; Close is optional.
func NewPool(policy Selector, ups ...*Upstream) *Pool {
	p := &Pool{policy: policy}
	if p.policy == nil {
		p.policy = &RoundRobin{}
	}
	p.SetUpstreams(ups)
	return p
}

// NewPoolWith returns a pool built from cfg. It checks cfg and says what is
// wrong; with Discovery it performs the first lookup before returning (a
// failed lookup is not an error: the pool starts empty and keeps trying).
// Close the pool when it is no longer used, after its replacement (if any)
// is built, so shared state carries over.
func NewPoolWith(cfg PoolConfig) (*Pool, error) {
	p := &Pool{policy: cfg.Policy, reg: cfg.Registry, slowStart: cfg.SlowStart, queueTimeout: cfg.QueueTimeout}
	if p.policy == nil {
		p.policy = &RoundRobin{}
	}
	if p.reg == nil {
		p.reg = DefaultRegistry
	}
	switch {
	case cfg.SlowStart < 0:
		return nil, fmt.Errorf("slow_start %v: must be positive, or 0 for off", cfg.SlowStart)
	case cfg.QueueTimeout < 0:
		return nil, fmt.Errorf("queue_timeout %v: must be positive, or 0 for no waiting", cfg.QueueTimeout)
	case cfg.Discovery != nil && len(cfg.Upstreams) > 0:
		return nil, errors.New("pool: set either upstreams or discovery, not both")
	}
	for _, u := range cfg.Upstreams {
		if u == nil || u.Addr == "" {
			return nil, errors.New("pool: upstream without an address")
		}
		if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("upstream %s: scheme %q: want http or https", u.Addr, u.Scheme)
		}
	}
	if cfg.Active != nil {
		ac, err := cfg.Active.compile()
		if err != nil {
			return nil, err
		}
		p.active = ac
	}
	if cfg.Passive != nil {
		ph, err := cfg.Passive.withDefaults()
		if err != nil {
			return nil, err
		}
		p.passive = &ph
		p.passiveKey = ph.key()
	}
	var d *discoverer
	if cfg.Discovery != nil {
		var err error
		if d, err = newDiscoverer(p, *cfg.Discovery); err != nil {
			return nil, err
		}
	}
	p.SetUpstreams(cfg.Upstreams)
	if d != nil {
		p.disc = d
		d.start()
	}
	return p, nil
}

// Upstreams returns the current set. The slice must not be modified.
func (p *Pool) Upstreams() []*Upstream {
	if s := p.ups.Load(); s != nil {
		return *s
	}
	return nil
}

// SetUpstreams replaces the set; requests in flight keep the upstream they
// were given. An upstream already a member stays as it is; one that belongs
// to another pool is copied (an Upstream is a member of one pool for its
// life), and the copy shares the address's state. With Discovery, the next
// refresh replaces what is set here.
func (p *Pool) SetUpstreams(ups []*Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	old := p.Upstreams()
	// Hosts first seen after the pool had members are ramped up like
	// recovered ones; a pool's first members have nothing to protect.
	ramp := len(old) > 0
	next := make([]*Upstream, 0, len(ups))
	keep := make(map[*Upstream]struct{}, len(ups))
	seen := make(map[*Upstream]struct{}, len(ups))
	for _, u := range ups {
		if u == nil {
			continue
		}
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		if _, ok := p.members[u]; !ok {
			if !u.owner.CompareAndSwap(nil, p) {
				c := u.clone()
				if p.reg == nil {
					c.h = u.h // private state travels with the copy
				}
				c.owner.Store(p)
				u = c
			}
			p.bind(u, ramp)
		}
		keep[u] = struct{}{}
		next = append(next, u)
	}
	// Bind before unbinding so an address in both sets keeps its state.
	for _, u := range old {
		if _, ok := keep[u]; !ok {
			p.unbind(u)
		}
	}
	p.members = keep
	p.ups.Store(&next)
}

func (p *Pool) bind(u *Upstream, ramp bool) {
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	if p.reg != nil {
		h, created := p.reg.acquireHost(u.Addr)
		u.h = h
		if p.active != nil {
			u.act = p.reg.acquireChecker(h, u.Scheme, p.active)
			u.act.subscribe(u)
		}
		if p.passive != nil {
			u.pas = p.reg.acquirePassive(h, p.passive, p.passiveKey)
			u.pas.subscribe(u)
		}
		if created && ramp {
			h.markRecovered()
		}
	} else if u.h == nil {
		u.h = newHost(u.Addr)
	}
	u.slow = p.slowStart
	u.hash = addrHash(u.Addr)
}

func (p *Pool) unbind(u *Upstream) {
	if p.reg == nil {
		return
	}
	if u.act != nil {
		u.act.unsubscribe(u)
		p.reg.releaseChecker(u.act)
	}
	if u.pas != nil {
		u.pas.unsubscribe(u)
		p.reg.releasePassive(u.pas)
	}
	p.reg.releaseHost(u.h)
}

// Close stops discovery and releases the pool's hold on shared state
// (stopping active checkers no other pool uses). Requests still in flight
// may Release afterwards; Select keeps working on the last set, without
// health updates. Close is idempotent.
func (p *Pool) Close() error {
	if p.disc != nil {
		p.disc.stop()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for u := range p.members {
		p.unbind(u)
	}
	p.members = nil
	return nil
}

// Select picks an upstream for s and counts a request in flight on it. Every
// upstream Select returns must be given back with Release exactly once.
// When every healthy upstream is at MaxRequests it waits up to the pool's
// QueueTimeout, or until s.Request's context ends.
func (p *Pool) Select(s *Selection) (*Upstream, error) {
	u, full := p.tryPick(s)
	switch {
	case u != nil:
		return u, nil
	case !full:
		return nil, ErrNoUpstream
	case p.queueTimeout <= 0:
		return nil, errAllFull
	}
	return p.wait(s)
}

// tryPick picks an upstream, or reports whether waiting could help because
// some upstream the request may use is full.
func (p *Pool) tryPick(s *Selection) (u *Upstream, full bool) {
	for range 3 {
		ups := p.Upstreams()
		if u := p.pick(ups, s); u != nil {
			return u, false
		}
		if anyFull(ups, s) {
			return nil, true
		}
		// Nothing picked, yet nothing full: all are down, or a slot was
		// freed between the two looks. Look again to tell which.
	}
	return nil, false
}

func (p *Pool) pick(ups []*Upstream, s *Selection) *Upstream {
	// A policy saw u below its limit, but a concurrent request may take the
	// last slot before we do; then try the others.
	for range len(ups) + 1 {
		u := p.policy.Select(ups, s)
		if u == nil {
			return nil
		}
		if u.acquire() {
			return u
		}
	}
	return nil
}

// anyFull reports whether some upstream this request could use is healthy
// but at its limit.
func anyFull(ups []*Upstream, s *Selection) bool {
	for _, u := range ups {
		if u.full() && !s.Tried.Has(u) {
			return true
		}
	}
	return false
}

// Release ends one request on u and records how it went.
func (p *Pool) Release(u *Upstream, o Outcome) {
	h := u.h
	if h == nil {
		return // never selected from a pool
	}
	// u's own pool holds its settings and its waiters (the same as p when
	// the caller is consistent).
	if q := u.owner.Load(); q != nil {
		p = q
	}
	h.inflight.Add(-1)
	h.requests.Add(1)
	if o.Kind != Ignored {
		if o.Status != 0 {
			h.lat.record(o.Latency) // time to headers: only when they came
		}
		bad := o.Kind == Failure
		if pa := u.pas; pa != nil {
			now := mono()
			var trip bool
			bad, trip = pa.record(o, now)
			if trip {
				p.tryEject(u, now)
			}
		}
		if bad {
			h.failures.Add(1)
		}
	}
	if p.waiters.Load() > 0 {
		p.wake()
	}
}

// tryEject ejects u unless the pool's ejection cap is reached.
func (p *Pool) tryEject(u *Upstream, now int64) {
	p.ejectMu.Lock()
	defer p.ejectMu.Unlock()
	ups := p.Upstreams()
	n := 0
	for _, m := range ups {
		if m.pas != nil && m.pas.ejectedAt(now) {
			n++
		}
	}
	if n >= p.passive.allowedEjections(len(ups)) {
		u.pas.suppressed.Add(1)
		return
	}
	u.pas.eject(now)
}
