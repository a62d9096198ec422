// Package h1strict parses HTTP/1.1 message heads under strict rules, for
// fast paths that hand anything unusual to net/http: sluice's HTTP/1.1
// server loop (internal/server) and its synchronous upstream transport
// (proxy). Its functions say no rather than guess. A head they accept is
// one net/http's parser reads the same way; one they refuse is left
// untouched for net/http, which decides what it is and says so.
package h1strict

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// MaxFields bounds the field lines of a head the fast paths parse; more go
// to net/http.
const MaxFields = 64

var crlf = []byte("\r\n")

// HeadEnd returns the length of the head at the start of b (through its
// blank line), 0 when b holds no complete head yet, or -1 when b has a CR
// or LF that is not part of a CRLF: net/http's to judge, and no reason to
// wait for a blank line that may never come.
func HeadEnd(b []byte) int { return HeadEndFrom(b, 0) }

// HeadEndFrom is HeadEnd for a b whose bytes before from were scanned
// already (and found no end): a head that arrives in pieces is not
// rescanned from its start each time. from must leave the last three
// scanned bytes to scan again.
func HeadEndFrom(b []byte, from int) int {
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

// Split copies raw, a complete head as HeadEnd found it, into one string
// (the one allocation behind every string parsed from it) and splits it into
// its start line and its field lines (through the blank line). n is the
// number of field lines; ok is false when there are more than MaxFields or
// the start line does not end in CRLF.
func Split(raw []byte) (start, fields string, n int, ok bool) {
	n = bytes.Count(raw, crlf) - 2 // minus start line and blank line
	if n < 0 || n > MaxFields {
		return "", "", 0, false
	}
	s := string(raw)
	eol := indexCRLF(s)
	if eol < 0 {
		return "", "", 0, false
	}
	return s[:eol], s[eol+2:], n, true
}

// Fields parses n field lines (s, as Split returned it) into a header map
// sized once, the values of all fields in one slice. Names must be tokens,
// values visible ASCII, space, tab or obs-text (trimmed of optional
// whitespace); obs-fold, bare CR or LF and empty names are refused. check
// sees every field under its canonical name and says whether to keep it in
// the map and whether the head is still acceptable. The fields go into
// into, emptied first, when it is not nil; a new map otherwise.
func Fields(s string, n int, into http.Header, check func(key, value string) (keep, ok bool)) (http.Header, bool) {
	h := into
	if h == nil {
		h = make(http.Header, n)
	} else {
		clear(h)
	}
	vals := make([]string, n)
	for i := 0; ; i++ {
		eol := indexCRLF(s)
		switch {
		case eol < 0:
			return nil, false
		case eol == 0:
			return h, true // the blank line
		case i == n:
			return nil, false
		}
		line := s[:eol]
		s = s[eol+2:]
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false
		}
		name := line[:colon]
		value, vok := fieldValue(line[colon+1:])
		if !vok || !Token(name) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		keep, ok := check(key, value)
		switch {
		case !ok:
			return nil, false
		case !keep:
			continue
		}
		if prior, ok := h[key]; ok {
			h[key] = append(prior, value)
			continue
		}
		vals[i] = value
		h[key] = vals[i : i+1 : i+1]
	}
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

// Token reports whether s is a non-empty RFC 9110 token.
func Token(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return s != ""
}

// VisibleASCII reports whether s has only bytes 0x21-0x7E.
func VisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ContentLength accepts only plain digits, as RFC 9110 writes it; a sign,
// spaces inside, a list or a value past 18 digits is refused.
func ContentLength(v string) (int64, bool) {
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

// EqualFold reports whether s equals lower, ignoring ASCII case; lower must
// be lower case.
func EqualFold(s, lower string) bool {
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
