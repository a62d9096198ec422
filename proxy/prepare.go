package proxy

import (
	"strings"
)

// emptyUA is sent as the User-Agent when the client sent none, so Go's
// transport does not add its own. Shared read-only.
var emptyUA = []string{""}

var teTrailersValue = []string{"trailers"}
var connUpgrade = []string{"Upgrade"}

// prepare edits the outbound request once, before any attempt, so every
// attempt sends the same thing.
func (rt *roundTrip) prepare() {
	in, out, h := rt.in, rt.out, rt.h

	upgrade := upgradeToken(in.Header)
	keepTE := teTrailers(in.Header)
	removeHopByHop(out.Header)
	if keepTE {
		out.Header["Te"] = teTrailersValue
	}
	// Upgrade means nothing from an HTTP/1.0 client (RFC 9110 §7.8).
	if upgrade != "" && in.ProtoAtLeast(1, 1) && h.upgradeAllowed(upgrade) {
		out.Header["Connection"] = connUpgrade
		out.Header["Upgrade"] = []string{upgrade}
		rt.upgrade = upgrade
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = emptyUA
	}
	// After the Connection tokens were removed, so a client cannot strip
	// the headers we set.
	rt.sel.ClientIP = h.setForwarded(in, out, &rt.fwdVals)
	if len(h.headerUp) > 0 {
		applyHeaderRules(out.Header, h.headerUp)
		if v, ok := out.Header["Host"]; ok {
			// A rule that sets Host changes the request's Host, which Go
			// keeps outside the header map.
			out.Host = strings.Join(v, "")
			delete(out.Header, "Host")
		}
	}
}

// upgradeAllowed reports whether a requested Upgrade token may go upstream.
func (h *Handler) upgradeAllowed(tok string) bool {
	if !validToken(tok) {
		return false
	}
	for _, u := range h.upgrades {
		if strings.EqualFold(u, tok) {
			return true
		}
	}
	return false
}
