package proxy

import (
	"io"
	"net/http"
	"net/textproto"
	"sync"
)

// informational forwards 1xx responses (103 Early Hints, 100 Continue)
// from the upstream to the client while an attempt is in flight. The
// transport may call Got1xxResponse late, from its own goroutine; outside
// an attempt the callback touches nothing.
//
// A 100 Continue answering the client's own Expect: 100-continue is not
// written here: net/http sends it to the client when the transport starts
// reading the body, which the transport does exactly when the upstream said
// 100. Writing it ourselves as well could send two.
type informational struct {
	mu       sync.Mutex
	active   bool
	w        http.ResponseWriter
	expect   bool
	http10   bool // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
	forwards int
}

// maxForwarded1xx bounds how many 1xx responses one request relays, so an
// upstream cannot flood the client.
const maxForwarded1xx = 32

func (g *informational) init(w http.ResponseWriter, in *http.Request) {
	g.w = w
	g.expect = headerHasToken(in.Header, "Expect", "100-continue")
	g.http10 = !in.ProtoAtLeast(1, 1)
}

// sendContinue makes net/http write its automatic 100 Continue now, under
// our lock. net/http writes it from whichever goroutine first reads the
// body (the transport's writer), without the lock it uses for final
// responses; a 103 relayed at the same moment would interleave with it.
func (g *informational) sendContinue(body io.Reader) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var none [0]byte
	_, _ = body.Read(none[:])
}

func (g *informational) setActive(on bool) {
	g.mu.Lock()
	g.active = on
	g.mu.Unlock()
}

// got1xx relays one 1xx response: the Got1xxResponse hook of net/http's
// path, and got1xxFunc of the synchronous one.
func (g *informational) got1xx(code int, header textproto.MIMEHeader) error {
	if code == http.StatusContinue && g.expect || g.http10 || code < 100 || code > 199 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active || g.forwards >= maxForwarded1xx {
		return nil
	}
	g.forwards++
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
