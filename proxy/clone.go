package proxy

import (
	"context"
	"net/http"
	"strings"
)

// cloneRequest makes the outbound request. Header, Trailer and URL are deep
// copies: the inbound request is read by middleware and the access log after
// we return, and the 1xx callback runs on another goroutine, so sharing maps
// would race. The URL's scheme and host are blanked so an absolute-form
// request line cannot steer where we dial; each attempt sets them.
func cloneRequest(ctx context.Context, in *http.Request) *http.Request {
	out := in.WithContext(ctx)
	u := *in.URL
	u.Scheme, u.Host, u.User = "", "", nil
	if raw := rawPath(in.RequestURI); raw != "" {
		// Send the path bytes exactly as the client did: URL.EscapedPath
		// re-encodes anything it considers non-canonical.
		u.Opaque, u.Path, u.RawPath = raw, "", ""
	}
	out.URL = &u
	if in.Header != nil {
		out.Header = in.Header.Clone()
	} else {
		out.Header = make(http.Header)
	}
	out.Trailer = in.Trailer.Clone()
	out.RequestURI = "" // the transport refuses requests that carry one
	out.Close = false   // always reuse upstream connections
	out.TransferEncoding = nil
	return out
}

// rawPath returns the path part of a request-target as received, or "" when
// the URL's own encoding must be used (no request line, "*", or a path that
// starts with "//", which a transport would read as an authority).
func rawPath(requestURI string) string {
	p := requestURI
	if !strings.HasPrefix(p, "/") {
		// absolute-form: scheme://authority/path?query
		i := strings.Index(p, "://")
		if i < 0 {
			return ""
		}
		p = p[i+3:]
		j := strings.IndexByte(p, '/')
		if j < 0 {
			return ""
		}
		p = p[j:]
	}
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p = p[:q]
	}
	if strings.HasPrefix(p, "//") {
		return ""
	}
	return p
}
