package upstream

import (
	"net/http"
	"net/netip"
)

// Selector is a load-balancing policy. Select returns one of ups that
// s.Usable accepts, or nil when none is. It must be safe for concurrent use
// and should not allocate, and must not keep s or what it points to after
// it returns: the proxy reuses them for later requests.
type Selector interface {
	Select(ups []*Upstream, s *Selection) *Upstream
}

// Named is implemented by policies that know their PolicyByName name; Pool
// status reports it.
type Named interface {
	Name() string
}

// Selection is what a policy may look at to pick an upstream for one request.
// The proxy keeps it in its pooled per-request state, so passing it by
// pointer costs no allocation.
type Selection struct {
	Request *http.Request
	// Writer lets a policy set response headers (the sticky-cookie policy
	// sets its cookie). It may be nil.
	Writer http.ResponseWriter
	// ClientIP is the client address derived under the trusted-proxies
	// policy; zero when unknown.
	ClientIP netip.Addr
	// Tried holds the upstreams that already failed this request.
	Tried Tried
}

// Usable reports whether u may be picked for this selection: available and
// not already tried by this request.
func (s *Selection) Usable(u *Upstream) bool {
	// Available spelled out, so that a policy pays one call per member.
	if !u.Healthy() || u.MaxRequests > 0 && u.Inflight() >= int64(u.MaxRequests) {
		return false
	}
	return s.Tried.n == 0 || !s.Tried.Has(u)
}

// Tried is a small set of upstreams that failed for one request, so a retry
// goes elsewhere while another upstream is available. It holds up to
// len(Tried.ups) entries without allocating; further ones are not remembered
// (a request is never retried that often with sane settings).
type Tried struct {
	ups [8]*Upstream
	n   uint8
}

// Add remembers u.
func (t *Tried) Add(u *Upstream) {
	if int(t.n) < len(t.ups) && !t.Has(u) {
		t.ups[t.n] = u
		t.n++
	}
}

// Has reports whether u was added.
func (t *Tried) Has(u *Upstream) bool {
	for i := uint8(0); i < t.n; i++ {
		if t.ups[i] == u {
			return true
		}
	}
	return false
}

// Len is the number of upstreams remembered.
func (t *Tried) Len() int { return int(t.n) }

// Reset forgets every upstream.
func (t *Tried) Reset() { *t = Tried{} }
