package upstream

// LeastRequests picks the usable upstream with the fewest requests in
// flight relative to its weight, breaking ties at random. In-flight counts
// are per address, shared by every pool proxying there.
type LeastRequests struct{}

// Name implements Named.
func (LeastRequests) Name() string { return "least_requests" }

// Select implements Selector.
func (LeastRequests) Select(ups []*Upstream, s *Selection) *Upstream {
	var best, spare *Upstream
	var bestLoad, bestW uint64
	ties := 0
	r := newRand()
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		if !admit(u, &r) {
			if spare == nil {
				spare = u
			}
			continue
		}
		load, w := loadOf(u), staticWeight(u)
		switch {
		case best == nil || load*bestW < bestLoad*w:
			best, bestLoad, bestW, ties = u, load, w, 1
		case load*bestW == bestLoad*w:
			// Reservoir sampling over the ties: each is kept with
			// probability 1/ties, so all are equally likely.
			ties++
			if r.intn(ties) == 0 {
				best = u
			}
		}
	}
	if best == nil {
		return spare
	}
	return best
}

// loadOf is u's in-flight count plus one, so weights still order idle
// upstreams.
func loadOf(u *Upstream) uint64 {
	n := u.Inflight()
	if n < 0 {
		n = 0
	}
	return uint64(n) + 1
}

// staticWeight is Weight with 0 meaning 1, without slow start.
func staticWeight(u *Upstream) uint64 {
	if u.Weight > 1 {
		return uint64(u.Weight)
	}
	return 1
}
