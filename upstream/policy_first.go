package upstream

// First picks the first usable upstream in list order: the others are
// backups that take traffic only while the ones before them are down or
// full. A recovering primary takes its traffic back gradually under slow
// start.
type First struct{}

// Name implements Named.
func (First) Name() string { return "first" }

// Select implements Selector.
func (First) Select(ups []*Upstream, s *Selection) *Upstream {
	var spare *Upstream
	var r fastRand
	seeded := false
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		if u.ramp() >= 1 {
			return u
		}
		if !seeded {
			r, seeded = newRand(), true
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
