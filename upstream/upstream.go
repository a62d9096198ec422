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

// Upstream is one backend address and its runtime counters. The counters are
// updated with atomics on the hot path; read them with Pool.Status.
type Upstream struct {
	// Addr is "host:port" as dialed.
	Addr string
	// Scheme is "http" (default) or "https".
	Scheme string
	// Weight is used by weighted policies; 0 means 1.
	Weight int
	// MaxRequests caps concurrent requests to this upstream; 0 = unlimited.
	// An upstream at its limit is skipped by every policy, not failed.
	MaxRequests int

	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	// down is set by health checking (active or passive); a down upstream is
	// not selected.
	down atomic.Bool
}

// New returns an upstream for a "host:port" address with the http scheme.
func New(addr string) *Upstream { return &Upstream{Addr: addr, Scheme: "http"} }

// Available reports whether a policy may pick u now: it is healthy and
// below its concurrency limit.
func (u *Upstream) Available() bool {
	if u.down.Load() {
		return false
	}
	return u.MaxRequests <= 0 || u.inflight.Load() < int64(u.MaxRequests)
}

// Inflight is the number of requests currently sent to u.
func (u *Upstream) Inflight() int64 { return u.inflight.Load() }

// SetDown marks u unavailable (true) or available again (false). Health
// checkers call it; library users may too (e.g. to drain an upstream).
func (u *Upstream) SetDown(down bool) { u.down.Store(down) }

// acquire counts one request in flight, respecting MaxRequests. It reports
// false when the limit was reached between the policy's check and now.
func (u *Upstream) acquire() bool {
	if u.MaxRequests <= 0 {
		u.inflight.Add(1)
		return true
	}
	for {
		n := u.inflight.Load()
		if n >= int64(u.MaxRequests) {
			return false
		}
		if u.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
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
