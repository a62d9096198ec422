package upstream

import "math/bits"

// Random picks a usable upstream at random, in proportion to its effective
// weight (Weight scaled by slow start).
type Random struct{}

// Name implements Named.
func (Random) Name() string { return "random" }

// Select implements Selector. It is one pass of weighted reservoir
// sampling: the i-th usable upstream replaces the pick with probability
// w_i / (w_1 + ... + w_i), which leaves each chosen in proportion to its
// weight, with no allocation and one look at each member.
func (Random) Select(ups []*Upstream, s *Selection) *Upstream {
	var pick *Upstream
	var total uint64
	r := newRand()
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		w := weightOf(u)
		total += w
		if x, _ := bits.Mul64(r.next(), total); x < w {
			pick = u
		}
	}
	return pick
}
