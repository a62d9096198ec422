package server

import (
	"log/slog"
	"net/http"
	"net/textproto"
	"strings"
)

// smugglingGuard is the request-level hardening Serve puts in front of
// every handler. It covers what net/http's HTTP/1.x parser accepts but a
// front proxy must not let pass as is. Everything the parser already refuses (see
// docs/reliability.md, "Request smuggling") is not repeated here.
//
// The rule: an HTTP/1.x connection is closed after a request whose framing
// another hop may have read differently:
//
//   - a chunked request. net/http, given both Content-Length and
//     "Transfer-Encoding: chunked", deletes Content-Length, frames by chunked
//     and keeps the connection; RFC 9112 §6.1 says it MUST be closed after
//     the response. The handler cannot tell that Content-Length was there
//     (and under TLS no one can look at the raw bytes), so every chunked
//     HTTP/1.x request closes its connection. Browsers never send chunked
//     uploads; other clients lose keep-alive for those requests only.
//   - an HTTP/1.0 request with a body. net/http silently drops
//     Transfer-Encoding on HTTP/1.0 and frames by Content-Length; RFC 9112
//     §6.1 calls that faulty framing and asks for a close.
//
// "Connection: close" is set on the response before the handler runs;
// net/http then closes the connection after the reply. A handler's own
// header copies cannot undo it: the proxy strips the upstream's Connection
// (hop-by-hop) before it copies response headers.
//
// The one response that would drop it is 101 Switching Protocols, after
// which the connection becomes a tunnel and the bytes behind the body would
// go to the upstream raw. So an upgrade request with such a body gets 400.
//
// The common request (HTTP/2, or HTTP/1.x with no body or a Content-Length
// body on 1.1) passes through with three field reads and no allocation.
type smugglingGuard struct {
	next http.Handler
	log  *slog.Logger
}

func newSmugglingGuard(next http.Handler, log *slog.Logger) http.Handler {
	return &smugglingGuard{next: next, log: log}
}

func (g *smugglingGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && ambiguousFraming(r) {
		h := w.Header()
		h.Set("Connection", "close")
		if wantsUpgrade(r.Header) {
			g.log.LogAttrs(r.Context(), slog.LevelDebug, "refused an upgrade request with a chunked or HTTP/1.0 body",
				slog.String("remote", r.RemoteAddr), slog.String("uri", r.RequestURI))
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("upgrade requests cannot carry a chunked or HTTP/1.0 body\n"))
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

// ambiguousFraming reports whether the connection must close after r (see
// smugglingGuard). net/http sets TransferEncoding to ["chunked"] exactly
// when it read the body as chunked, and ignores Transfer-Encoding on
// HTTP/1.0.
func ambiguousFraming(r *http.Request) bool {
	return len(r.TransferEncoding) > 0 || r.ProtoMinor == 0 && r.ContentLength != 0
}

// wantsUpgrade reports whether h asks to switch protocols: an Upgrade field
// and "upgrade" among the Connection options.
func wantsUpgrade(h http.Header) bool {
	if len(h["Upgrade"]) == 0 {
		return false
	}
	for _, line := range h["Connection"] {
		for line != "" {
			var tok string
			tok, line, _ = strings.Cut(line, ",")
			if strings.EqualFold(textproto.TrimString(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}
