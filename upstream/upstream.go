// Package upstream decides where a proxied request goes: the upstreams of a
// pool, the policy that picks one, and the runtime state (in-flight requests,
// failures, health) that keeps traffic away from broken backends.
//
// It imports no configuration or CLI package: a Go program builds a Pool by
// hand and gives it to proxy.Handler.
package upstream

import (
	"sync/atomic"
	"time"
)

// Upstream is one backend address as a member of one Pool. Its runtime
// counters and health live in state shared by every pool that proxies to the
// same address (see Registry); read them with Pool.Status.
//
// The exported fields are configuration: set them before the upstream is
// given to a pool and do not change them afterwards (build a new Upstream
// instead; its state carries over because it is keyed by address).
type Upstream struct {
	// Addr is "host:port" as dialed.
	Addr string
	// Scheme is "http" (default) or "https".
	Scheme string
	// Weight is used by weighted policies; 0 means 1.
	Weight int
	// MaxRequests caps concurrent requests to this address; 0 = unlimited.
	// An upstream at its limit is skipped by every policy, not failed.
	MaxRequests int

	// state gathers everything that makes u unhealthy into one word, so the
	// check every policy makes for every member is one atomic load: the
	// operator's SetDown, and bits that active checkers and passive
	// trackers set on each member sharing them when their verdict changes.
	state atomic.Uint32

	// owner is the pool that adopted this upstream. An upstream is bound to
	// one pool for its life, so the fields below never change once set and
	// a Release always lands on the state its Select counted on.
	owner atomic.Pointer[Pool]
	h     *host    // per-address counters; nil until a pool adopts u
	act   *checker // active health for (address, check); nil without one
	pas   *passive // passive health for (address, settings); nil without
	slow  time.Duration
	hash  uint64 // address hash for rendezvous hashing

	// rampDone is the host recovery generation whose slow start u has
	// finished, so the common case costs two atomic loads and no clock read.
	rampDone atomic.Uint32
	// wrr is the smooth weighted round robin "current weight"; guarded by
	// the WeightedRoundRobin policy's mutex.
	wrr int64
}

// New returns an upstream for a "host:port" address with the http scheme.
func New(addr string) *Upstream { return &Upstream{Addr: addr, Scheme: "http"} }

// Available reports whether a policy may pick u now: it is healthy and
// below its concurrency limit.
func (u *Upstream) Available() bool {
	return u.Healthy() && (u.MaxRequests <= 0 || u.Inflight() < int64(u.MaxRequests))
}

// Healthy reports whether u is up: not set down, not failing its active
// check, not ejected by passive checks. Unlike Available it ignores
// MaxRequests.
func (u *Upstream) Healthy() bool {
	st := u.state.Load()
	return st == 0 || u.healthySlow(st)
}

// State bits.
const (
	stDown    uint32 = 1 << iota // SetDown(true)
	stFailing                    // its active check says unhealthy
	stEjected                    // passive checks ejected it
)

// healthySlow handles a non-zero state: only an ejection can end by itself
// (its time runs out), and ending it clears the bit everywhere.
func (u *Upstream) healthySlow(st uint32) bool {
	if st != stEjected || u.pas == nil {
		return false
	}
	return !u.pas.ejected()
}

// Inflight is the number of requests currently sent to u's address (by
// every pool sharing its state).
func (u *Upstream) Inflight() int64 {
	if u.h == nil {
		return 0
	}
	return u.h.inflight.Load()
}

// SetDown marks u unavailable (true) or available again (false), e.g. to
// drain it. It is independent of health checks: a set-down upstream stays
// down whatever they say. Coming back starts slow start, if configured.
func (u *Upstream) SetDown(down bool) {
	if down {
		u.state.Or(stDown)
		return
	}
	if u.state.And(^stDown)&stDown != 0 && u.h != nil {
		u.h.markRecovered()
	}
}

// full reports whether u is healthy but at its request limit: the case where
// waiting for a slot makes sense.
func (u *Upstream) full() bool {
	return u.MaxRequests > 0 && u.Inflight() >= int64(u.MaxRequests) && u.Healthy()
}

// acquire counts one request in flight, respecting MaxRequests. It reports
// false when the limit was reached between the policy's check and now.
func (u *Upstream) acquire() bool {
	if u.MaxRequests <= 0 {
		u.h.inflight.Add(1)
		return true
	}
	for {
		n := u.h.inflight.Load()
		if n >= int64(u.MaxRequests) {
			return false
		}
		if u.h.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// clone returns an unbound copy of u's configuration.
func (u *Upstream) clone() *Upstream {
	c := &Upstream{Addr: u.Addr, Scheme: u.Scheme, Weight: u.Weight, MaxRequests: u.MaxRequests}
	c.state.Store(u.state.Load() & stDown)
	return c
}

// OutcomeKind says how one attempt against an upstream ended, for passive
// health accounting.
type OutcomeKind uint8

const (
	// Success: the upstream answered and the answer was delivered (or the
	// status was not one the proxy treats as a failure).
	Success OutcomeKind = iota
	// Failure: the upstream could not be reached, broke the connection, timed
	// out, or its response body broke mid-way. Counted against the upstream.
	Failure
	// Ignored: the attempt ended for a reason that says nothing about the
	// upstream's health (the client went away, or the proxy chose to retry a
	// configured status). Not counted as a failure.
	Ignored
)

// Outcome is what the proxy reports when it releases an upstream.
type Outcome struct {
	Kind    OutcomeKind
	Status  int           // response status, 0 if none
	Latency time.Duration // time to response headers (or to the failure)
}
