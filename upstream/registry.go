package upstream

import "sync"

// Registry holds the runtime state of upstream addresses — counters,
// latency, passive-health trackers and active checkers — keyed by address
// and reference-counted by the pools that use them. Because a reload builds
// the new pool before closing the old one, the state of every address the
// new configuration still lists carries over; an address no pool uses any
// more is dropped and its checker stopped.
//
// Active checkers and passive trackers are further keyed by their settings:
// pools that check an address the same way share one checker (one
// goroutine), pools that check it differently each get their own.
type Registry struct {
	mu       sync.Mutex
	hosts    map[string]*host
	checkers map[string]*checker
	passives map[string]*passive
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		hosts:    make(map[string]*host),
		checkers: make(map[string]*checker),
		passives: make(map[string]*passive),
	}
}

// DefaultRegistry is used by pools whose PoolConfig names no registry.
var DefaultRegistry = NewRegistry()

// Len is the number of addresses held.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hosts)
}

// Checkers is the number of active checkers running.
func (r *Registry) Checkers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.checkers)
}

// acquireHost returns the state for addr and whether it was just created.
func (r *Registry) acquireHost(addr string) (h *host, created bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h = r.hosts[addr]
	if h == nil {
		h = newHost(addr)
		r.hosts[addr] = h
		created = true
	}
	h.refs++
	return h, created
}

func (r *Registry) releaseHost(h *host) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.refs--
	if h.refs <= 0 && r.hosts[h.addr] == h {
		delete(r.hosts, h.addr)
	}
}

func (r *Registry) acquireChecker(h *host, scheme string, cfg *activeCheck) *checker {
	key := scheme + "|" + h.addr + "|" + cfg.key
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checkers[key]
	if c == nil {
		c = newChecker(h, scheme, cfg, key)
		r.checkers[key] = c
		c.start()
	}
	c.refs++
	return c
}

func (r *Registry) releaseChecker(c *checker) {
	r.mu.Lock()
	c.refs--
	last := c.refs <= 0 && r.checkers[c.key] == c
	if last {
		delete(r.checkers, c.key)
	}
	r.mu.Unlock()
	if last {
		c.stop() // outside the lock: it waits for a check in progress
	}
}

func (r *Registry) acquirePassive(h *host, cfg *PassiveHealth, cfgKey string) *passive {
	key := h.addr + "|" + cfgKey
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.passives[key]
	if p == nil {
		p = newPassive(h, *cfg, key)
		r.passives[key] = p
	}
	p.refs++
	return p
}

func (r *Registry) releasePassive(p *passive) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.refs--
	if p.refs <= 0 && r.passives[p.key] == p {
		delete(r.passives, p.key)
	}
}
