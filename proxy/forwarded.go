package proxy

import (
	"net/http"
	"net/netip"
	"strings"
)

// peerAddr parses the connection's remote address; the zero Addr when it is
// not an IP (a unix socket) or unparsable.
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

func (h *Handler) trustedPeer(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, p := range h.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// setForwarded writes X-Forwarded-For/-Proto/-Host on out. From an untrusted
// peer every incoming value is replaced; from a trusted one the chain is kept
// and the peer appended. It returns the client IP: the peer itself, or for a
// trusted peer the right-most address in the chain that is not a trusted
// proxy. vals is room for the X-Forwarded-For and -Host values set from an
// untrusted peer, so they take no allocation of their own.
func (h *Handler) setForwarded(in, out *http.Request, vals *[2]string) netip.Addr {
	peer := peerAddr(in.RemoteAddr)
	trusted := h.trustedPeer(peer)
	client := peer

	proto := protoHTTP
	if in.TLS != nil {
		proto = protoHTTPS
	}
	if !trusted {
		if peer.IsValid() {
			vals[0] = peerString(in.RemoteAddr, peer)
			out.Header["X-Forwarded-For"] = vals[0:1:1]
		} else {
			delete(out.Header, "X-Forwarded-For")
		}
		out.Header["X-Forwarded-Proto"] = proto
		if in.Host != "" {
			vals[1] = in.Host
			out.Header["X-Forwarded-Host"] = vals[1:2:2]
		} else {
			delete(out.Header, "X-Forwarded-Host")
		}
		return client
	}

	prior := out.Header["X-Forwarded-For"]
	if len(prior) > 0 {
		client = rightmostUntrusted(h, prior, peer)
		out.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + peerString(in.RemoteAddr, peer)}
	} else {
		out.Header["X-Forwarded-For"] = []string{peerString(in.RemoteAddr, peer)}
	}
	if out.Header.Get("X-Forwarded-Proto") == "" {
		out.Header["X-Forwarded-Proto"] = proto
	}
	if out.Header.Get("X-Forwarded-Host") == "" {
		setOrDelete(out.Header, "X-Forwarded-Host", in.Host)
	}
	return client
}

// Shared read-only header values: the transport only reads them.
var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// peerString formats the peer IP, reusing the bytes of RemoteAddr for the
// common IPv4 case instead of allocating a new string.
func peerString(remote string, peer netip.Addr) string {
	if peer.Is4() {
		if i := strings.LastIndexByte(remote, ':'); i > 0 && strings.IndexByte(remote[:i], ':') < 0 {
			return remote[:i]
		}
	}
	return peer.String()
}

func setOrDelete(h http.Header, k, v string) {
	if v == "" {
		delete(h, k)
		return
	}
	h[k] = []string{v}
}

// rightmostUntrusted walks the X-Forwarded-For chain from the right and
// returns the first address that is not a trusted proxy: the left part of
// the chain could have been written by the client itself.
func rightmostUntrusted(h *Handler, chain []string, peer netip.Addr) netip.Addr {
	for i := len(chain) - 1; i >= 0; i-- {
		line := chain[i]
		if line == "" {
			continue // an empty field line says nothing
		}
		// Every element counts, an empty one too (",b" has two): an
		// element that is not an address, empty included, is garbage.
		for {
			j := strings.LastIndexByte(line, ',')
			ip, err := netip.ParseAddr(strings.TrimSpace(line[j+1:]))
			if err != nil {
				return peer // garbage in the chain: trust nothing left of it
			}
			ip = ip.Unmap().WithZone("")
			if !h.trustedPeer(ip) {
				return ip
			}
			peer = ip
			if j < 0 {
				break
			}
			line = line[:j]
		}
	}
	return peer
}
