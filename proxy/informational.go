package proxy

import (
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
)

// informational forwards 1xx responses (100 Continue, 103 Early Hints) from
// the upstream to the client while one attempt is in flight. The transport
// may call Got1xxResponse late, from its own goroutine; once stop has run
// the callback touches nothing.
type informational struct {
	mu   sync.Mutex
	done bool
	w    http.ResponseWriter
}

// watch1xx installs a fresh guard on the outbound request for one attempt.
func (rt *roundTrip) watch1xx() *informational {
	g := &informational{w: rt.w}
	trace := &httptrace.ClientTrace{Got1xxResponse: g.got}
	rt.out = rt.out.WithContext(httptrace.WithClientTrace(rt.in.Context(), trace))
	return g
}

func (g *informational) stop() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
}

func (g *informational) got(code int, header textproto.MIMEHeader) error {
	if code == http.StatusSwitchingProtocols {
		return nil // a final response for us; handled by the upgrade path
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return nil
	}
	hdr := http.Header(header).Clone()
	removeHopByHop(hdr)
	// The ResponseWriter writes its current header map with a 1xx, and
	// keeps it afterwards (RFC 8297). Add ours, write, then restore what
	// outer handlers had set.
	dst := g.w.Header()
	saved := make(map[string][]string, len(hdr))
	for k, vv := range hdr {
		saved[k] = dst[k]
		dst[k] = append(append([]string(nil), dst[k]...), vv...)
	}
	g.w.WriteHeader(code)
	for k, vv := range saved {
		if vv == nil {
			delete(dst, k)
		} else {
			dst[k] = vv
		}
	}
	return nil
}
