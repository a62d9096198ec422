package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopHeaders are meaningful for one connection only (RFC 9110 §7.6.1) and
// are never forwarded, in either direction.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection", // non-standard, sent by old clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer", // the transport announces trailers itself
	"Transfer-Encoding",
	"Upgrade",
	"Http2-Settings", // connection-specific by definition (RFC 7540 §3.2.1)
}

// removeHopByHop deletes the fixed hop-by-hop headers and every header named
// in any Connection line (also when the first line is empty). It never
// touches the inbound request: h is always a copy.
func removeHopByHop(h http.Header) {
	for _, line := range h["Connection"] {
		for line != "" {
			var tok string
			tok, line, _ = strings.Cut(line, ",")
			if tok = textproto.TrimString(tok); tok != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// headerHasToken reports whether any line of h[key] lists tok
// (case-insensitive, comma-separated).
func headerHasToken(h http.Header, key, tok string) bool {
	for _, line := range h[key] {
		for line != "" {
			var t string
			t, line, _ = strings.Cut(line, ",")
			if strings.EqualFold(textproto.TrimString(t), tok) {
				return true
			}
		}
	}
	return false
}

// upgradeToken returns the protocol a request or response asks to switch to,
// or "" when it does not (Upgrade is only meaningful with Connection: upgrade).
func upgradeToken(h http.Header) string {
	if !headerHasToken(h, "Connection", "upgrade") {
		return ""
	}
	return textproto.TrimString(h.Get("Upgrade"))
}

// teTrailers reports whether the client accepts trailers (gRPC needs this
// forwarded although TE is hop-by-hop).
func teTrailers(h http.Header) bool { return headerHasToken(h, "Te", "trailers") }

// validToken reports whether s is a non-empty RFC 9110 token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
