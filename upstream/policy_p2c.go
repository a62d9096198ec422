package upstream

// P2C is "power of two choices": it samples two distinct usable upstreams at
// random and takes the one with fewer requests in flight relative to its
// weight. It spreads load almost as well as LeastRequests at O(1) cost and
// without herding every proxy onto the same idle upstream.
type P2C struct{}

// Name implements Named.
func (P2C) Name() string { return "p2c" }

// Select implements Selector.
func (P2C) Select(ups []*Upstream, s *Selection) *Upstream {
	n := len(ups)
	if n == 0 {
		return nil
	}
	r := newRand()
	if n >= 2 {
		// Fast path: two distinct random indices, both usable.
		i := r.intn(n)
		j := r.intn(n - 1)
		if j >= i {
			j++
		}
		if a, b := ups[i], ups[j]; s.Usable(a) && s.Usable(b) {
			return lessLoaded(a, b, &r)
		}
	}
	// Some are unusable: sample two distinct ranks among the usable ones.
	k := 0
	for _, u := range ups {
		if s.Usable(u) {
			k++
		}
	}
	switch k {
	case 0:
		return nil
	case 1:
		for _, u := range ups {
			if s.Usable(u) {
				return u
			}
		}
		return nil
	}
	ra := r.intn(k)
	rb := r.intn(k - 1)
	if rb >= ra {
		rb++
	}
	var a, b *Upstream
	rank := 0
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		switch rank {
		case ra:
			a = u
		case rb:
			b = u
		}
		rank++
	}
	// Usability may have changed between the passes.
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return lessLoaded(a, b, &r)
}

// lessLoaded returns whichever of a and b has fewer requests in flight per
// unit of weight (a on a tie: it was drawn at random). An upstream in slow
// start is passed over unless admitted.
func lessLoaded(a, b *Upstream, r *fastRand) *Upstream {
	if !admit(a, r) {
		return b
	}
	if !admit(b, r) {
		return a
	}
	if loadOf(b)*staticWeight(a) < loadOf(a)*staticWeight(b) {
		return b
	}
	return a
}
