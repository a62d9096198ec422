package upstream

import "time"

// minRamp is the share of traffic a recovering upstream gets at the start
// of its slow start, so it is probed at once rather than starved.
const minRamp = 0.1

// ramp is u's slow-start factor in [minRamp, 1]: 1 when slow start is off or
// over. While it runs, weighted policies scale u's weight by it and the
// others admit u with that probability.
func (u *Upstream) ramp() float64 {
	// Inlined fast path: slow start off, or this recovery already ramped.
	if u.slow <= 0 || u.h.upGen.Load() == u.rampDone.Load() {
		return 1
	}
	return u.rampNow()
}

func (u *Upstream) rampNow() float64 {
	g := u.h.upGen.Load()
	el := time.Duration(mono() - u.h.upSince.Load())
	if el >= u.slow {
		u.rampDone.Store(g)
		return 1
	}
	return max(minRamp, float64(el)/float64(u.slow))
}

// weightUnit is the fixed-point scale of effective weights, so slow start
// can scale a weight of 1 without rounding it to 0.
const weightUnit = 1024

// weightOf is u's effective weight in weightUnit units: Weight (0 = 1)
// scaled by its slow-start factor.
func weightOf(u *Upstream) uint64 {
	if u.slow > 0 {
		return rampWeight(u)
	}
	if u.Weight > 1 {
		return uint64(u.Weight) * weightUnit
	}
	return weightUnit
}

func rampWeight(u *Upstream) uint64 {
	w := uint64(weightUnit)
	if u.Weight > 1 {
		w *= uint64(u.Weight)
	}
	if f := u.ramp(); f < 1 {
		w = max(1, uint64(float64(w)*f))
	}
	return w
}

// admit is slow start for policies that ignore weights: it reports whether
// to take u now, always unless u is ramping up, then with probability
// equal to its factor.
func admit(u *Upstream, r *fastRand) bool {
	return u.slow <= 0 || admitRamp(u, r)
}

func admitRamp(u *Upstream, r *fastRand) bool {
	f := u.ramp()
	return f >= 1 || r.float() < f
}
