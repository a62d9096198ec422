package proxy

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// cloneRequest makes the outbound request from in: into out, with its URL
// in u, both fields of the round trip, so the clone costs no allocation of
// its own. Header, Trailer and URL are copies: the inbound request is read by
// middleware and the access log after we return, and the 1xx callback runs
// on another goroutine, so sharing maps would race. The URL's scheme and host
// are blanked so an absolute-form request line cannot steer where we dial;
// each attempt sets them.
func cloneRequest(ctx context.Context, in, out *http.Request, u *url.URL, into http.Header) {
	// WithContext is inlined and its copy does not escape: it lives on the
	// stack until copied into out.
	*out = *in.WithContext(ctx)
	*u = *in.URL
	u.Scheme, u.Host, u.User = "", "", nil
	if raw := rawPath(in.RequestURI); raw != "" {
		// Send the path bytes exactly as the client did: URL.EscapedPath
		// re-encodes anything it considers non-canonical.
		u.Opaque, u.Path, u.RawPath = raw, "", ""
	} else {
		u.Opaque = "" // only origin-form paths are ever sent
	}
	out.URL = u
	out.Header = copyHeaderInto(into, in.Header)
	out.Trailer = in.Trailer.Clone()
	out.RequestURI = "" // the transport refuses requests that carry one
	out.Close = false   // always reuse upstream connections
	out.TransferEncoding = nil
}

// rawPath returns the path part of a request-target as received, or "" when
// the URL's own encoding must be used (no request line, "*", an empty path,
// or a path that starts with "//", which a transport would read as an
// authority). Only origin-form and http(s) absolute-form targets get here
// (see validTarget).
func rawPath(requestURI string) string {
	p := requestURI
	if !strings.HasPrefix(p, "/") {
		rest, ok := cutHTTPScheme(p)
		if !ok {
			return ""
		}
		// The authority ends at the first '/' or '?' (no fragments in
		// a request-target: net/http keeps '#' in the path, and so do we).
		end := strings.IndexAny(rest, "/?")
		if end < 0 || rest[end] != '/' {
			return ""
		}
		p = rest[end:]
	}
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p = p[:q]
	}
	if strings.HasPrefix(p, "//") {
		return ""
	}
	return p
}

// cutHTTPScheme strips "http://" or "https://" (any case) from an
// absolute-form target.
func cutHTTPScheme(s string) (string, bool) {
	for _, scheme := range [...]string{"http://", "https://"} {
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return s[len(scheme):], true
		}
	}
	return "", false
}

// validTarget reports whether the request-target is a form a reverse proxy
// forwards (RFC 9112 §3.2): origin-form, asterisk-form for OPTIONS, or
// absolute-form with an http(s) scheme. Anything else ("A:0", "x:/p",
// authority-form outside CONNECT) would be routed on one reading and sent
// upstream on another, so it is refused.
func validTarget(r *http.Request) bool {
	t := r.RequestURI
	switch {
	case t == "":
		return true // built in-process, not read off a connection
	case t[0] == '/':
		return true
	case t == "*":
		return r.Method == http.MethodOptions
	case r.ProtoMajor >= 2:
		return false // h2 :path is origin-form or "*"
	}
	_, ok := cutHTTPScheme(t)
	return ok
}

// headerRoom is how many keys prepare may add to a copied header
// (X-Forwarded-For/-Proto/-Host, User-Agent, Te) without the map growing.
const headerRoom = 5

// copyHeaderInto copies the map into out, emptied first, or into a new map
// sized for what prepare adds when out is nil. The value slices are shared
// with their capacity clipped: nothing in the proxy writes into a value
// slice (edits replace the slice), and an append copies. At most one
// allocation where Header.Clone makes two and the map then grows.
func copyHeaderInto(out, h http.Header) http.Header {
	if out == nil {
		out = make(http.Header, len(h)+headerRoom)
	} else {
		clear(out)
	}
	for k, vv := range h {
		out[k] = vv[:len(vv):len(vv)]
	}
	return out
}
