package server

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

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
// and say no to everything else.

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
	url                  *url.URL
}

// maxFastHeaders bounds the fields of a head the fast loop parses; more go
// to net/http.
const maxFastHeaders = 64

// headEnd returns the length of the head at the start of b (through its
// blank line), 0 when b holds no complete head yet, or -1 when b has a CR
// or LF that is not part of a CRLF: net/http's to judge, and no reason to
// wait for a blank line that may never come.
func headEnd(b []byte) int { return headEndFrom(b, 0) }

// headEndFrom is headEnd for a b whose bytes before from were scanned
// already (and found no end): a head that arrives in pieces is not
// rescanned from its start each time. from must leave the last three
// scanned bytes to scan again.
func headEndFrom(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 < len(b) && b[i+1] != '\n' {
				return -1
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return -1
			}
			if i >= 3 && b[i-2] == '\n' {
				return i + 1
			}
		}
	}
	return 0
}

// parseHead parses raw, a complete head ending in CRLF CRLF. ok is false
// when the request is not one for the fast loop (see above); nothing is
// reported then, net/http will say what is wrong, if anything is.
func parseHead(raw []byte) (h head, ok bool) {
	// Count the fields first so the header map and its values are sized
	// once; an odd byte anywhere is reason enough to hand over.
	lines := bytes.Count(raw, []byte("\r\n")) - 2 // minus request line and blank line
	if lines < 0 || lines > maxFastHeaders {
		return h, false
	}
	s := string(raw) // the one allocation behind every string below

	// Request line: METHOD SP origin-form SP HTTP/1.1 CRLF
	eol := indexCRLF(s)
	if eol < 0 {
		return h, false
	}
	line := s[:eol]
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return h, false
	}
	if h.method = fastMethod(line[:sp]); h.method == "" {
		return h, false
	}
	rest := line[sp+1:]
	sp = strings.IndexByte(rest, ' ')
	if sp <= 0 || rest[sp+1:] != "HTTP/1.1" {
		return h, false
	}
	h.target = rest[:sp]
	if h.target[0] != '/' || !visibleASCII(h.target) {
		return h, false
	}
	u, err := url.ParseRequestURI(h.target)
	if err != nil {
		return h, false
	}
	h.url = u

	h.header = make(http.Header, lines)
	vals := make([]string, lines)
	haveHost, haveCL := false, false
	s = s[eol+2:]
	for i := 0; ; i++ {
		eol = indexCRLF(s)
		if eol < 0 {
			return h, false
		}
		if eol == 0 {
			break // the blank line
		}
		line = s[:eol]
		s = s[eol+2:]
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return h, false
		}
		name := line[:colon]
		value, vok := fieldValue(line[colon+1:])
		if !vok || !token(name) {
			return h, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			if haveHost || !httpguts.ValidHostHeader(value) {
				return h, false
			}
			haveHost, h.host = true, value
			continue // net/http keeps Host out of the map too
		case "Content-Length":
			if haveCL {
				return h, false
			}
			n, ok := contentLength(value)
			if !ok {
				return h, false
			}
			haveCL, h.contentLength = true, n
		case "Connection":
			switch {
			case asciiEqualFold(value, "close"):
				h.close = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return h, false // options name other fields: net/http's job
			}
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Te", "Pragma", "Http2-Settings":
			// Framing, interim responses, protocol switches, and the
			// Pragma rewrite net/http does: all net/http's.
			return h, false
		}
		if prior, ok := h.header[key]; ok {
			h.header[key] = append(prior, value)
			continue
		}
		vals[i] = value
		h.header[key] = vals[i : i+1 : i+1]
	}
	if !haveHost {
		return h, false
	}
	return h, true
}

func fastMethod(m string) string {
	for _, k := range fastMethods {
		if m == k {
			return k
		}
	}
	return ""
}

// fieldValue trims optional whitespace around v and reports whether every
// byte is allowed in a field value: visible ASCII, space, tab, obs-text.
func fieldValue(v string) (string, bool) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return "", false
		}
	}
	return textproto.TrimString(v), true
}

func token(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return s != ""
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// contentLength accepts only plain digits, as RFC 9110 writes it; a sign,
// spaces inside, a list or a value past int63 go to net/http.
func contentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// indexCRLF finds the next CRLF, or returns -1 when a lone CR or LF comes
// first (or there is none).
func indexCRLF(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				return i
			}
			return -1
		case '\n':
			return -1
		}
	}
	return -1
}
