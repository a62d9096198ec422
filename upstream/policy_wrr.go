package upstream

import "sync"

// WeightedRoundRobin is smooth weighted round robin (as in nginx): each
// selection adds every usable upstream's effective weight to its running
// score, picks the highest and subtracts the total from it. Weights 5:1:1
// give a a b a c a a rather than a a a a a b c, and a down upstream's share
// spreads over the others in proportion to their weights.
//
// The running scores live on the Upstream values (guarded by the policy's
// mutex), so selection allocates nothing.
type WeightedRoundRobin struct {
	mu sync.Mutex
}

// Name implements Named.
func (*WeightedRoundRobin) Name() string { return "weighted_round_robin" }

// Select implements Selector.
func (w *WeightedRoundRobin) Select(ups []*Upstream, s *Selection) *Upstream {
	w.mu.Lock()
	defer w.mu.Unlock()
	var best *Upstream
	var total int64
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		ew := int64(weightOf(u))
		u.wrr += ew
		total += ew
		if best == nil || u.wrr > best.wrr {
			best = u
		}
	}
	if best != nil {
		best.wrr -= total
	}
	return best
}
