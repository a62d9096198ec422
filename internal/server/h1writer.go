package server

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice/internal/h1strict"
)

// h1writer is the fast loop's http.ResponseWriter. It frames a response the
// way net/http's HTTP/1.1 server does (same Content-Length computation for
// short bodies, chunking, trailers, Date, Content-Type sniffing, suppressed
// fields for 204/304, "Connection: close" when the connection will close),
// so a handler cannot tell the two apart on the wire. What it leaves out is
// what the fast loop never serves: HTTP/1.0, 100-continue and upgrades
// (Hijack), which stay with net/http.
type h1writer struct {
	c      *h1fastConn
	req    *http.Request
	body   *h1body
	header http.Header
	// snap is the header as it was when WriteHeader was called, taken when
	// the handler asks for the map again before it was sent: net/http
	// sends that state, and later changes are trailers.
	snap    http.Header
	status  int   // final status once written, 0 before
	sent    bool  // status line and header are in c.bw
	cl      int64 // declared or computed Content-Length, -1 none
	written int64 // body bytes accepted
	chunked bool
	// closeAfter: the connection closes after this response.
	closeAfter bool
	// pending holds the start of the body until the header goes out, so a
	// short body gets a Content-Length (the connection's buffer).
	pending  []byte
	trailers []string // declared in "Trailer"
	werr     error    // first write error: the client is gone
	// over is set when the handler returned: a goroutine it left behind
	// must not write into the next response or move its deadlines, and a
	// header sent now is final (a Content-Length can be computed).
	over atomic.Bool
}

var errHandlerReturned = errors.New("http: response used after its handler returned")

// pendingMax matches the buffer net/http holds back before it starts
// chunking; a longer body (or a Flush) sends the header first.
const pendingMax = 2048

func (w *h1writer) Header() http.Header {
	if w.status != 0 && !w.sent && w.snap == nil && !w.over.Load() {
		w.snap = w.header.Clone()
	}
	return w.header
}

func (w *h1writer) WriteHeader(code int) {
	if w.over.Load() {
		return
	}
	w.writeHeader(code)
}

func (w *h1writer) writeHeader(code int) {
	if w.status != 0 {
		w.c.s.log.Warn("http: superfluous WriteHeader call", "status", code, "uri", w.req.RequestURI)
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.status = code
	if v := w.header["Content-Length"]; len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err == nil && n >= 0 {
			w.cl = n
		} else {
			w.c.s.log.Warn("http: invalid Content-Length", "value", v[0])
			delete(w.header, "Content-Length")
		}
	}
}

// writeInterim sends a 1xx response at once, with the fields set so far
// (RFC 8297 asks that they stay for the final response).
func (w *h1writer) writeInterim(code int) {
	bw := w.c.bw
	writeStatusLine(bw, code)
	w.writeFields(w.header, suppressedNoBody[:])
	bw.WriteString("\r\n")
	w.noteErr(bw.Flush())
}

func (w *h1writer) Write(p []byte) (int, error) {
	if err := w.admit(len(p)); err != nil {
		return 0, err
	}
	if w.holds(len(p)) {
		w.pending = append(w.pending, p...)
		return len(p), w.sendIfComplete()
	}
	return w.send(p)
}

// WriteString holds a short string (an error page) without converting it
// to a slice of its own.
func (w *h1writer) WriteString(s string) (int, error) {
	if err := w.admit(len(s)); err != nil {
		return 0, err
	}
	if w.holds(len(s)) {
		w.pending = append(w.pending, s...)
		return len(s), w.sendIfComplete()
	}
	return w.send([]byte(s))
}

// sendIfComplete sends the response the moment its declared Content-Length
// is reached: nothing can follow the last byte (no trailers without
// chunking), so the client need not wait for what the handler does after
// it (a proxy's logging, metrics and pool bookkeeping). finish then has
// nothing left to write. The write happens inside the handler's Write, so
// the slow-client limits bracket it as they do any other.
func (w *h1writer) sendIfComplete() error {
	if w.cl < 0 || w.written != w.cl || w.chunked || w.req.Method == http.MethodHead {
		return nil
	}
	if !w.sent {
		w.sendHeader(nil)
	}
	if w.werr == nil {
		w.noteErr(w.c.bw.Flush())
		if w.werr == nil {
			w.c.yieldIfAlone()
		}
	}
	return w.werr
}

// admit checks and counts n body bytes about to be written, writing the
// implicit 200 header first.
func (w *h1writer) admit(n int) error {
	if w.over.Load() {
		return errHandlerReturned
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !bodyAllowedForStatus(w.status) {
		return http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.cl >= 0 && w.written > w.cl {
		return http.ErrContentLength
	}
	return w.werr
}

// holds reports whether n more bytes still go to pending, before the header.
func (w *h1writer) holds(n int) bool { return !w.sent && len(w.pending)+n <= pendingMax }

// send writes admitted bytes that pending cannot hold, the header first.
func (w *h1writer) send(p []byte) (int, error) {
	if !w.sent {
		w.sendHeader(p)
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil // counted, sniffed, never sent
	}
	n, err := w.writeBody(p)
	if err != nil {
		return n, err
	}
	return n, w.sendIfComplete()
}

func (w *h1writer) writeBody(p []byte) (int, error) {
	bw := w.c.bw
	if w.chunked && len(p) > 0 {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		n, err := bw.Write(p)
		bw.WriteString("\r\n")
		w.noteErr(err)
		return n, w.werr
	}
	n, err := bw.Write(p)
	w.noteErr(err)
	return n, w.werr
}

func (w *h1writer) noteErr(err error) {
	if err != nil && w.werr == nil {
		w.werr = err
	}
}

// Flush sends the header, if not yet sent, and everything buffered.
func (w *h1writer) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *h1writer) FlushError() error {
	if w.over.Load() {
		return errHandlerReturned
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHeader(nil)
	}
	if w.werr != nil {
		return w.werr
	}
	w.noteErr(w.c.bw.Flush())
	return w.werr
}

// SetReadDeadline and SetWriteDeadline are what http.ResponseController
// calls; they act on the connection, as net/http's HTTP/1 writer does.
func (w *h1writer) SetReadDeadline(t time.Time) error {
	if w.over.Load() {
		return errHandlerReturned
	}
	return w.c.rdl.set(w.c.nc.SetReadDeadline, t)
}

// SetWriteDeadline keeps a future deadline that is within the write
// limit's slack of t: the slow-client watch moves it before every write of
// every response, and it stays in place between responses.
func (w *h1writer) SetWriteDeadline(t time.Time) error {
	if w.over.Load() {
		return errHandlerReturned
	}
	if t.IsZero() || w.c.s.writeSlack <= 0 {
		return w.c.wdl.set(w.c.nc.SetWriteDeadline, t)
	}
	return w.c.wdl.extend(w.c.nc.SetWriteDeadline, t, w.c.s.writeSlack)
}

// finish completes the response after the handler returned: header (with a
// computed Content-Length when the body fitted in pending), held-back body,
// last chunk and trailers. It reports whether the connection may serve
// another request.
func (w *h1writer) finish() bool {
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHeader(nil)
	}
	if w.chunked {
		bw := w.c.bw
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	sending := w.c.bw.Buffered() > 0
	w.noteErr(w.c.bw.Flush())
	if sending && w.werr == nil {
		w.c.yieldIfAlone()
	}
	switch {
	case w.werr != nil, w.closeAfter:
		return false
	case w.req.Method != http.MethodHead && w.cl >= 0 && bodyAllowedForStatus(w.status) && w.written != w.cl:
		return false // short body: the client would read the next response as its rest
	}
	return true
}

// sendHeader writes the status line and header into c.bw, deciding the
// framing as net/http's chunkWriter.writeHeader does. next is the write
// that did not fit in pending, if any: it is sniffed with pending.
func (w *h1writer) sendHeader(next []byte) {
	w.sent = true
	w.c.s.unanswered.Add(-1)
	h := w.header
	if w.snap != nil {
		h = w.snap
	}
	code := w.status
	head := w.req.Method == http.MethodHead
	te := ""
	if v := h["Transfer-Encoding"]; len(v) > 0 {
		te = v[0]
	}
	trailers := hasTrailers(h)
	if trailers {
		for _, v := range h["Trailer"] {
			forEachElement(v, func(k string) {
				if k = http.CanonicalHeaderKey(k); httpguts.ValidTrailerHeader(k) {
					w.trailers = append(w.trailers, k)
				}
			})
		}
	}
	if w.over.Load() && !trailers && te == "" && bodyAllowedForStatus(code) && w.cl < 0 && (!head || w.written > 0) {
		if head {
			w.cl = w.written
		} else {
			w.cl = int64(len(w.pending))
		}
	}
	if hasToken(h["Connection"], "close") || w.req.Close || w.c.s.draining.Load() {
		w.closeAfter = true
	}
	if !w.body.eof() {
		// The handler did not read all of the body. net/http would try to
		// discard it; the fast loop closes instead (after a lingering
		// half-close), which is always safe.
		w.closeAfter = true
	}
	var contentType string
	var suppress []string
	if bodyAllowedForStatus(code) {
		_, haveType := h["Content-Type"]
		if !haveType && te == "" && len(w.pending)+len(next) > 0 && h.Get("Content-Encoding") == "" {
			contentType = sniff(w.pending, next)
		}
	} else if code == http.StatusNotModified {
		suppress = suppressed304[:]
	} else {
		suppress = suppressedNoBody[:]
	}
	if w.cl >= 0 && te != "" && te != "identity" {
		w.cl = -1 // net/http: a handler's Transfer-Encoding wins over its Content-Length
	}
	if w.cl < 0 && !head && bodyAllowedForStatus(code) {
		if te == "identity" {
			w.closeAfter = true // the body ends when the connection does
		} else {
			w.chunked = true
		}
	}

	bw := w.c.bw
	writeStatusLine(bw, code)
	w.writeFields(h, suppress)
	if w.cl >= 0 && !contains(suppress, "Content-Length") {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(w.cl, 10))
		bw.WriteString("\r\n")
	}
	if contentType != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(contentType)
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter && code != http.StatusSwitchingProtocols {
		bw.WriteString("Connection: close\r\n")
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		if !head {
			w.writeBody(p)
		}
	}
}

// sniff is http.DetectContentType over the first bytes of the body, held
// back (pending) and about to be written (next), as net/http sees them.
func sniff(pending, next []byte) string {
	const sniffLen = 512 // what DetectContentType looks at
	if len(pending) >= sniffLen || len(next) == 0 {
		return http.DetectContentType(pending)
	}
	if len(pending) == 0 {
		return http.DetectContentType(next)
	}
	var buf [sniffLen]byte
	n := copy(buf[:], pending)
	n += copy(buf[n:], next)
	return http.DetectContentType(buf[:n])
}

// newlineToSpace is net/http's: each CR and each LF becomes a space.
var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

var (
	suppressed304    = [...]string{"Content-Type", "Content-Length", "Transfer-Encoding"}
	suppressedNoBody = [...]string{"Content-Length", "Transfer-Encoding"}
)

// writeFields writes the handler's fields: never the framing ones
// (sendHeader writes Content-Length, Transfer-Encoding and Connection as
// it decided them), never trailers-to-be, and never what suppress names. Invalid names are dropped and line breaks in values
// become spaces, as net/http does.
func (w *h1writer) writeFields(h http.Header, suppress []string) {
	bw := w.c.bw
	for k, vv := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || contains(suppress, k) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

func writeField(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

func (w *h1writer) writeTrailers() {
	bw := w.c.bw
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vv {
				writeField(bw, name, v)
			}
		}
	}
	for _, k := range w.trailers {
		for _, v := range w.header[k] {
			writeField(bw, k, v)
		}
	}
}

func hasTrailers(h http.Header) bool {
	if len(h["Trailer"]) > 0 {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func bodyAllowedForStatus(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func forEachElement(v string, fn func(string)) {
	for f := range strings.SplitSeq(v, ",") {
		if f = textproto.TrimString(f); f != "" {
			fn(f)
		}
	}
}

// hasToken reports whether any of the comma-separated lines holds token
// (case-insensitive).
func hasToken(lines []string, token string) bool {
	for _, line := range lines {
		for f := range strings.SplitSeq(line, ",") {
			if h1strict.EqualFold(textproto.TrimString(f), token) {
				return true
			}
		}
	}
	return false
}

// statusLines caches "HTTP/1.1 200 OK\r\n" and friends.
var statusLines [600]string

func init() {
	for code := 100; code < len(statusLines); code++ {
		if text := http.StatusText(code); text != "" {
			statusLines[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
}

func writeStatusLine(bw *bufio.Writer, code int) {
	if code < len(statusLines) && statusLines[code] != "" {
		bw.WriteString(statusLines[code])
		return
	}
	// net/http's wording for codes it has no text for.
	fmt.Fprintf(bw, "HTTP/1.1 %03d status code %d\r\n", code, code)
}

// httpDate returns the Date field's value for now, formatted once a second.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &dateText{sec: sec, text: now.UTC().AppendFormat(make([]byte, 0, 29), http.TimeFormat)}
	cachedDate.Store(d)
	return d.text
}

type dateText struct {
	sec  int64
	text []byte
}

var cachedDate atomic.Pointer[dateText]
