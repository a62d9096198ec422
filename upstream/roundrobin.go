package upstream

import "sync/atomic"

// RoundRobin picks upstreams in turn, skipping unusable ones.
type RoundRobin struct {
	next atomic.Uint64
}

// Select implements Selector.
func (rr *RoundRobin) Select(ups []*Upstream, s *Selection) *Upstream {
	n := uint64(len(ups))
	if n == 0 {
		return nil
	}
	start := rr.next.Add(1) - 1
	for i := uint64(0); i < n; i++ {
		u := ups[(start+i)%n]
		if s.Usable(u) {
			return u
		}
	}
	return nil
}
