package upstream

import "math/rand/v2"

// fastRand is a splitmix64 generator seeded once per selection from the
// runtime's generator, for policies that need a random number per upstream
// (tie breaks, slow-start admission): cheaper than a runtime call each time,
// and its state lives on the caller's stack.
type fastRand uint64

func newRand() fastRand { return fastRand(rand.Uint64()) }

func (r *fastRand) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	return mix(uint64(*r))
}

// intn returns a number in [0, n) for n > 0 (Lemire's multiply-shift; its
// bias is below 2^-32 for the pool sizes seen here).
func (r *fastRand) intn(n int) int {
	hi := (r.next() >> 32) * uint64(n)
	return int(hi >> 32)
}

// float returns a number in [0, 1).
func (r *fastRand) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// mix is the splitmix64 finalizer: a fast, well-spread 64-bit permutation.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
