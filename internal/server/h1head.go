package server

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice/internal/h1strict"
	"golang.org/x/net/http/httpguts"
)

// The fast HTTP/1.1 loop (h1serve.go) parses only requests whose head is
// plainly well formed and whose framing no hop can read two ways. Anything
// else — a Transfer-Encoding, a repeated or odd Content-Length, Expect,
// Upgrade, obs-fold, bare LF, HTTP/1.0, CONNECT, absolute-form targets,
// unusual bytes, an oversized head — makes parseHead report false, and the
// connection, bytes unread, goes to net/http's server, which answers exactly
// as it did before the fast loop existed. So the fast loop never has to be
// right about an edge case: it only has to recognise the common request,
// and say no to everything else. The rules shared with the proxy's
// response reading are in internal/h1strict.

// fastMethods are the methods the fast loop serves, as constants so the
// request's Method costs no allocation.
var fastMethods = [...]string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodDelete, http.MethodOptions, http.MethodPatch,
}

// head is one parsed request head. Its strings are slices of one string
// holding the whole head, so a request costs one allocation for all of
// them.
type head struct {
	method, target, host string
	header               http.Header
	contentLength        int64 // 0 when absent
	close                bool  // "Connection: close"
	url                  url.URL
}

// maxFastHeaders bounds the fields of a head the fast loop parses.
const maxFastHeaders = h1strict.MaxFields

// headEnd: see h1strict.HeadEnd.
func headEnd(b []byte) int { return h1strict.HeadEnd(b) }

// parseHead parses raw, a complete head ending in CRLF CRLF. ok is false
// when the request is not one for the fast loop (see above); nothing is
// reported then, net/http will say what is wrong, if anything is.
//
// The header fields go into header, emptied first (h1fastConn.reqHeader).
func parseHead(raw []byte, header http.Header) (h head, ok bool) {
	line, fields, n, ok := h1strict.Split(raw)
	if !ok {
		return h, false
	}
	if h.method, h.target, ok = requestLine(line); !ok {
		return h, false
	}
	if h.url, ok = parseTarget(h.target); !ok {
		return h, false
	}

	haveHost, haveCL := false, false
	h.header, ok = h1strict.Fields(fields, n, header, func(key, value string) (keep, ok bool) {
		switch key {
		case "Host":
			if haveHost || !httpguts.ValidHostHeader(value) {
				return false, false
			}
			haveHost, h.host = true, value
			return false, true // net/http keeps Host out of the map too
		case "Content-Length":
			if haveCL {
				return false, false
			}
			n, ok := h1strict.ContentLength(value)
			haveCL, h.contentLength = true, n
			return true, ok
		case "Connection":
			switch {
			case h1strict.EqualFold(value, "close"):
				h.close = true
			case h1strict.EqualFold(value, "keep-alive"):
			default:
				return false, false // options name other fields: net/http's job
			}
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Te", "Pragma", "Http2-Settings":
			// Framing, interim responses, protocol switches, and the
			// Pragma rewrite net/http does: all net/http's.
			return false, false
		}
		return true, true
	})
	if !ok || !haveHost {
		return h, false
	}
	return h, true
}

// requestLine splits "METHOD SP origin-form SP HTTP/1.1" (no CRLF); ok is
// false for any other request line.
func requestLine(line string) (method, target string, ok bool) {
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return "", "", false
	}
	if method = fastMethod(line[:sp]); method == "" {
		return "", "", false
	}
	rest := line[sp+1:]
	sp = strings.IndexByte(rest, ' ')
	if sp <= 0 || rest[sp+1:] != "HTTP/1.1" {
		return "", "", false
	}
	target = rest[:sp]
	if target[0] != '/' || !h1strict.VisibleASCII(target) {
		return "", "", false
	}
	return method, target, true
}

// parseTarget parses an origin-form target as url.ParseRequestURI does,
// without its allocation in the common case: a path of characters that
// neither unescaping nor EscapedPath would change, and any query. Other
// targets (percent-escapes, characters URL.EscapedPath would encode) take
// url.ParseRequestURI's way. target is visible ASCII and starts with '/'
// (requestLine).
func parseTarget(target string) (url.URL, bool) {
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if !plainPathBytes[path[i]] {
			u, err := url.ParseRequestURI(target)
			if err != nil {
				return url.URL{}, false
			}
			return *u, true
		}
	}
	if hasQuery && query == "" { // "/p?": the only '?' is the last byte
		return url.URL{Path: path, ForceQuery: true}, true
	}
	return url.URL{Path: path, RawQuery: query}, true
}

// plainPathBytes marks the bytes that stand for themselves in a path: not
// '%', and not a byte URL.EscapedPath would escape (RFC 3986 unreserved,
// sub-delims that stay, ':', '@' and '/'). A table: parseTarget looks up
// every byte of every request's path.
var plainPathBytes = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// requestLineSoFar reports whether b, the start of a head without its end
// yet, can still be a request the fast loop serves: once its first line is
// in, that line must be one (requestLine). Anything else goes to net/http
// at once, which answers it instead of waiting for a blank line.
func requestLineSoFar(b []byte) bool {
	if b[0] < 'A' || b[0] > 'Z' {
		return false
	}
	if i := bytes.IndexByte(b, '\n'); i > 0 {
		_, _, ok := requestLine(string(b[:i-1]))
		return ok
	}
	return true
}

func fastMethod(m string) string {
	for _, k := range fastMethods {
		if m == k {
			return k
		}
	}
	return ""
}
