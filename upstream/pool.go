package upstream

import (
	"errors"
	"sync/atomic"
)

// ErrNoUpstream is returned by Pool.Select when no upstream is usable. The
// proxy answers it with 503.
var ErrNoUpstream = errors.New("no upstream available")

// Pool is a set of upstreams and the policy that picks among them. The set
// can be replaced at run time (discovery, reload) without locking readers.
type Pool struct {
	policy Selector
	ups    atomic.Pointer[[]*Upstream]
}

// NewPool returns a pool using policy (round robin when nil).
func NewPool(policy Selector, ups ...*Upstream) *Pool {
	if policy == nil {
		policy = &RoundRobin{}
	}
	p := &Pool{policy: policy}
	p.SetUpstreams(ups)
	return p
}

// Upstreams returns the current set. The slice must not be modified.
func (p *Pool) Upstreams() []*Upstream { return *p.ups.Load() }

// SetUpstreams replaces the set; requests in flight keep the upstream they
// were given.
func (p *Pool) SetUpstreams(ups []*Upstream) {
	cp := append([]*Upstream(nil), ups...)
	p.ups.Store(&cp)
}

// Select picks an upstream for s and counts a request in flight on it. Every
// upstream Select returns must be given back with Release exactly once.
func (p *Pool) Select(s *Selection) (*Upstream, error) {
	ups := p.Upstreams()
	// A policy saw u below its limit, but a concurrent request may take the
	// last slot before we do; then try the others.
	for range len(ups) + 1 {
		u := p.policy.Select(ups, s)
		if u == nil {
			return nil, ErrNoUpstream
		}
		if u.acquire() {
			return u, nil
		}
	}
	return nil, ErrNoUpstream
}

// Release ends one request on u and records how it went.
func (p *Pool) Release(u *Upstream, o Outcome) {
	u.inflight.Add(-1)
	u.requests.Add(1)
	if o.Kind == Failure {
		u.failures.Add(1)
	}
}
