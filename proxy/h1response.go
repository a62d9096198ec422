package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"

	"github.com/sluiceproxy/sluice/internal/h1strict"
)

// readResponse reads the response head at the start of br. A head that is
// plainly well formed and framed by a Content-Length (or has no body) is
// parsed by the strict reader below, which allocates a third of what
// http.ReadResponse does; any other goes to http.ReadResponse, which reads
// it from the start: the strict reader consumes nothing it refuses. The
// rules are internal/h1strict's, the ones sluice's server applies to
// requests; FuzzReadResponse checks that whatever the strict reader accepts,
// http.ReadResponse reads the same way.
//
// A response the strict reader parses is built in into, which the caller
// allocates once per exchange.
func readResponse(br *bufio.Reader, req *http.Request, into *upstreamResponse) (*http.Response, error) {
	res, ok, err := readResponseStrict(br, req, into)
	if ok || err != nil {
		return res, err
	}
	return http.ReadResponse(br, req)
}

// readResponseStrict waits for a complete head in br's buffer; ok false
// with a nil error hands the response to net/http (odd bytes, a head larger
// than the buffer, framing it does not handle).
func readResponseStrict(br *bufio.Reader, req *http.Request, into *upstreamResponse) (res *http.Response, ok bool, err error) {
	for scanned := 0; ; {
		n := br.Buffered()
		if n > 0 {
			b, _ := br.Peek(n)
			switch end := h1strict.HeadEndFrom(b, max(0, scanned-3)); {
			case end > 0:
				if res, ok = parseResponse(b[:end], br, req, into); ok {
					br.Discard(end)
				}
				return res, ok, nil
			case end < 0 || n == br.Size() || !statusLineSoFar(b):
				// Not a response for this reader: net/http says at once
				// what it is (an SSH banner gets its 502 now, not when
				// the header timeout ends the wait for a blank line).
				return nil, false, nil
			}
			scanned = n
		}
		if _, err := br.Peek(n + 1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // as http.ReadResponse says it
			}
			return nil, false, err
		}
	}
}

// parseResponse parses raw, a complete head. It accepts HTTP/1.1 final
// responses (200-599) with at most one plain Content-Length, no
// Transfer-Encoding, Trailer or Pragma, and a Connection of close or
// keep-alive only; a response whose body would run to the connection's end
// (no length) is refused too. The response and its body reader are built in
// into.
func parseResponse(raw []byte, br *bufio.Reader, req *http.Request, into *upstreamResponse) (*http.Response, bool) {
	line, fields, n, ok := h1strict.Split(raw)
	if !ok {
		return nil, false
	}
	code := statusLine(line)
	if code == 0 {
		return nil, false
	}
	res := &into.res
	*res = http.Response{
		Status:     line[9:],
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Request:    req,
		Body:       http.NoBody,
	}
	haveCL := false
	var cl int64
	res.Header, ok = h1strict.Fields(fields, n, into.header, func(key, value string) (keep, ok bool) {
		switch key {
		case "Content-Length":
			if haveCL {
				return false, false
			}
			haveCL = true
			cl, ok = h1strict.ContentLength(value)
			return true, ok
		case "Connection":
			switch {
			case h1strict.EqualFold(value, "close"):
				res.Close = true
				return false, true // net/http drops it once it noted the close
			case h1strict.EqualFold(value, "keep-alive"):
				return true, true
			}
			return false, false
		case "Transfer-Encoding", "Trailer", "Pragma":
			return false, false
		}
		return true, true
	})
	if !ok {
		return nil, false
	}
	if into.reuse {
		into.header = res.Header
	}
	switch {
	case req.Method == http.MethodHead:
		res.ContentLength = -1
		if haveCL {
			res.ContentLength = cl
		}
	case code == http.StatusNoContent || code == http.StatusNotModified:
	case !haveCL:
		return nil, false // read to the connection's end: net/http's
	case cl > 0:
		res.ContentLength = cl
		into.length = lengthBody{br: br, remain: cl}
		res.Body = &into.length
	}
	return res, true
}

const proto11 = "HTTP/1.1 "

// statusLine returns the status code of line, a status line without its
// CRLF, or 0 when it is not "HTTP/1.1 DDD[ reason]" with a final status
// (200-599): interim responses and nonsense are net/http's.
func statusLine(line string) int {
	if len(line) < len(proto11)+3 || line[:len(proto11)] != proto11 ||
		len(line) > 12 && line[12] != ' ' || !reasonPhrase(line[12:]) {
		return 0
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 {
		return 0
	}
	return code
}

// statusLineSoFar reports whether b, the start of a head, can still begin
// with a status line statusLine accepts.
func statusLineSoFar(b []byte) bool {
	k := min(len(b), len(proto11))
	if string(b[:k]) != proto11[:k] {
		return false
	}
	if i := bytes.IndexByte(b, '\n'); i > 0 {
		return statusLine(string(b[:i-1])) != 0
	}
	return true
}

// reasonPhrase accepts an empty phrase or a space and visible ASCII,
// spaces, tabs and obs-text.
func reasonPhrase(s string) bool {
	if s == "" {
		return true
	}
	return s[0] == ' ' && !strings.ContainsFunc(s, func(r rune) bool {
		return r < ' ' && r != '\t' || r == 0x7f
	})
}

// upstreamResponse holds a response from an HTTP/1.1 upstream with its body
// readers: one allocation per exchange where there were three (the
// response, the Content-Length reader, the transport's h1body).
type upstreamResponse struct {
	res    http.Response
	length lengthBody
	body   h1body
	// With reuse, the next response parsed here empties and refills the
	// last one's header map instead of making a new one. Only the
	// Handler's own round trip sets it (see roundTrip.recycle): it reads
	// no response after the next has begun. A map handed out by
	// Transport.RoundTrip, or to a 1xx hook, is never refilled.
	reuse  bool
	header http.Header
}

// lengthBody is a Content-Length body read from the connection's buffer;
// it ends early with io.ErrUnexpectedEOF, as net/http's does.
type lengthBody struct {
	br     *bufio.Reader
	remain int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	switch {
	case b.remain == 0:
		return n, io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }
