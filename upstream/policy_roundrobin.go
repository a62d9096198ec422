package upstream

import (
	"math/rand/v2"
	"sync/atomic"
)

// RoundRobin picks upstreams in turn, skipping unusable ones. It ignores
// weights (see WeightedRoundRobin).
type RoundRobin struct {
	next atomic.Uint64
}

// Name implements Named.
func (*RoundRobin) Name() string { return "round_robin" }

// Select implements Selector.
func (rr *RoundRobin) Select(ups []*Upstream, s *Selection) *Upstream {
	n := uint64(len(ups))
	if n == 0 {
		return nil
	}
	var start uint64
	if s.Tried.Len() > 0 {
		// A retry: start anywhere, and leave the turn order to fresh
		// requests. Advancing the shared counter here made the request
		// after a retry land on the failed upstream again, so a dead
		// upstream drew well over its share of first attempts.
		start = rand.Uint64()
	} else {
		start = rr.next.Add(1) - 1
	}
	var spare *Upstream // usable but turned away by slow start
	r := fastRand(start)
	for i := uint64(0); i < n; i++ {
		u := ups[(start+i)%n]
		if !s.Usable(u) {
			continue
		}
		if admit(u, &r) {
			return u
		}
		if spare == nil {
			spare = u
		}
	}
	return spare
}
