package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1strict"
	"github.com/sluiceproxy/sluice/internal/sockio"
)

// h1fastConn is one client connection on the fast HTTP/1.1 loop. It reads
// a head, and either serves it (parseHead accepted it) or hands the whole
// connection, unread bytes first, to net/http's server for good.
type h1fastConn struct {
	s      *h1server
	nc     net.Conn
	cr     connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	ctx    context.Context  // values every request's context carries
	state  atomic.Int32     // connIdle, connActive, connClosed
	rdl    connDeadline     // every read deadline goes through setReadDeadline
	wdl    connDeadline     // every write deadline through h1writer.SetWriteDeadline
	buf    [pendingMax]byte // backs h1writer.pending
	// The request and response header maps, emptied and reused by the
	// next request: one request at a time uses a connection, and no one
	// may use a request's maps once its handler returned (the
	// http.Handler contract; the proxy copies what it forwards).
	reqHeader, respHeader http.Header
}

// maxReusedFields bounds the header maps a connection keeps for its next
// request: an odd request with many fields should not pin their memory,
// or make clearing the map cost more, for the rest of the connection.
const maxReusedFields = 32

// h1exchange is one request's state, in one allocation.
type h1exchange struct {
	ctx  reqCtx
	w    h1writer
	body h1body
	req  http.Request
	url  url.URL
}

// Connection states, for a shutdown that closes idle connections only.
const (
	connIdle int32 = iota
	connActive
	connClosed
)

// fastReadBuffer is the read buffer, and so the largest head the fast loop
// parses; larger heads (big cookies) go to net/http.
const fastReadBuffer = 4 << 10

// lingerAfterUnreadBody is how long a connection that closes with request
// body bytes unread waits after its half-close, so the client reads the
// response before the close resets the connection (net/http waits as long).
const lingerAfterUnreadBody = 500 * time.Millisecond

// Like net/http, a body the handler left unread is read and discarded
// before the response, when it is short (maxDiscard) and comes quickly
// (discardTimeout), so the connection can serve the next request. Anything
// else closes the connection.
const (
	maxDiscard     = 256 << 10
	discardTimeout = time.Second
)

func (c *h1fastConn) serve() {
	s := c.s
	defer s.forget(c)
	c.cr.c = c
	c.br = bufio.NewReaderSize(&c.cr, fastReadBuffer)
	c.bw = bufio.NewWriterSize(c.nc, 4<<10)
	c.remote = c.nc.RemoteAddr().String()
	c.ctx = context.WithValue(context.WithValue(context.Background(),
		http.ServerContextKey, s.std), http.LocalAddrContextKey, c.nc.LocalAddr())
	for first := true; ; first = false {
		n, err := c.readHead(first)
		if err != nil {
			c.nc.Close()
			return
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			c.nc.Close() // shutdown closed it while the head came in
			return
		}
		var h head
		ok := false
		if n > 0 {
			raw, _ := c.br.Peek(n)
			if c.reqHeader == nil {
				c.reqHeader = make(http.Header)
			}
			h, ok = parseHead(raw, c.reqHeader)
		}
		if !ok {
			s.handOff(c)
			return
		}
		c.br.Discard(n)
		keep, linger := c.serveRequest(&h)
		if !keep || !c.state.CompareAndSwap(connActive, connIdle) || s.draining.Load() {
			if linger {
				c.closeWriteAndWait()
			}
			c.nc.Close()
			return
		}
	}
}

// readHead waits for a complete head at the start of the read buffer and
// returns its length; 0 when none fits the buffer (net/http's then). The
// first request gets the header timeout from the accept; later ones the
// idle timeout until their first byte, then the header timeout.
func (c *h1fastConn) readHead(first bool) (int, error) {
	o := &c.s.o
	headerTimed := first
	if first {
		c.readWithin(o.ReadHeaderTimeout)
	} else if c.br.Buffered() == 0 {
		c.readWithin(o.IdleTimeout)
	} else {
		headerTimed = true
		c.readWithin(o.ReadHeaderTimeout)
	}
	for scanned := 0; ; {
		n := c.br.Buffered()
		if n > 0 {
			b, _ := c.br.Peek(n)
			i := h1strict.HeadEndFrom(b, max(0, scanned-3))
			scanned = n
			switch {
			case i > 0:
				return i, nil
			case i < 0:
				return 0, nil // odd line ends: net/http's
			}
			if n == c.br.Size() || !requestLineSoFar(b) {
				return 0, nil // too big, or not a request we serve: net/http's
			}
			if !headerTimed {
				headerTimed = true
				c.readWithin(o.ReadHeaderTimeout)
			}
		}
		if _, err := c.br.Peek(n + 1); err != nil {
			return 0, err
		}
	}
}

// readWithin gives the next read d from now (0: no limit), keeping a
// deadline already within slack of that (h1deadline.go).
func (c *h1fastConn) readWithin(d time.Duration) {
	if d <= 0 {
		c.setReadDeadline(time.Time{})
		return
	}
	c.rdl.extend(c.nc.SetReadDeadline, time.Now().Add(d), time.Duration(slackFor(d)))
}

func (c *h1fastConn) setReadDeadline(t time.Time) { c.rdl.set(c.nc.SetReadDeadline, t) }

// serveRequest runs the handler for h. keep says the connection may serve
// another request; linger that it must half-close and wait before closing,
// because request body bytes may still be on their way.
func (c *h1fastConn) serveRequest(h *head) (keep, linger bool) {
	s := c.s
	ex := &h1exchange{}
	ctx := &ex.ctx
	ctx.Context, ctx.c = c.ctx, c
	ex.url = h.url
	tmpl := http.Request{
		Method:     h.method,
		URL:        &ex.url,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h.header,
		Body:       http.NoBody,
		Host:       h.host,
		RemoteAddr: c.remote,
		RequestURI: h.target,
		Close:      h.close,
	}
	var body *h1body
	if h.contentLength > 0 {
		body = &ex.body
		body.c, body.x = c, ctx
		body.remain.Store(h.contentLength)
		ctx.body = body
		tmpl.Body = body
		tmpl.ContentLength = h.contentLength
		if !s.bodyDeadlines {
			c.setReadDeadline(time.Time{}) // no header deadline on the body
		}
	}
	// WithContext is inlined and its copy does not escape: the request
	// costs no allocation of its own.
	ex.req = *tmpl.WithContext(ctx)
	req := &ex.req
	if c.respHeader == nil {
		c.respHeader = make(http.Header)
	}
	clear(c.respHeader)
	w := &ex.w
	w.c, w.req, w.body, w.header, w.cl, w.pending = c, req, body, c.respHeader, -1, c.buf[:0]
	c.cr.begin(ctx)

	s.unanswered.Add(1) // until sendHeader
	panicked := s.runHandler(w, req)
	w.over.Store(true)

	// As net/http: the request's context ends with the handler, and
	// nothing started for it reads the connection after that.
	c.cr.end()
	ctx.cancel(context.Canceled)
	unread := !body.eof()
	if unread {
		// A goroutine the handler left behind may still be reading the
		// body: cut its read short before taking the body from it.
		c.setReadDeadline(aLongTimeAgo)
		body.close()
		c.setReadDeadline(time.Time{})
		if !panicked && !w.sent && body.remain.Load() <= maxDiscard {
			c.setReadDeadline(time.Now().Add(discardTimeout))
			unread = !body.discard()
			c.setReadDeadline(time.Time{})
		}
	}
	if panicked {
		if !w.sent {
			s.unanswered.Add(-1)
		}
		// What was written goes out; what was held back does not, so a
		// response cut short never looks complete.
		c.bw.Flush()
		return false, false
	}
	keep = w.finish()
	if len(c.reqHeader) > maxReusedFields {
		c.reqHeader = nil
	}
	if len(c.respHeader) > maxReusedFields {
		c.respHeader = nil
	}
	return keep && !unread, unread && w.werr == nil
}

// runHandler calls the handler and reports whether it panicked. A panic
// other than http.ErrAbortHandler is logged with its stack, as net/http
// does.
func (s *h1server) runHandler(w *h1writer, r *http.Request) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				s.log.Error("http: panic serving request", "remote", r.RemoteAddr,
					"uri", r.RequestURI, "panic", p, "stack", string(buf))
			}
		}
	}()
	s.h.ServeHTTP(w, r)
	return false
}

// watchClient starts the background read that notices x's client leaving,
// once x's body is read: until then a leaving client fails the body's
// reads, which cancel the context.
func (c *h1fastConn) watchClient(x *reqCtx) {
	if x.body != nil && !x.body.watchAtEOF() {
		return // the body's last read starts it
	}
	c.cr.startBackground(x)
}

// clientFailed is called on a failed read of the connection: the request
// in flight, if any, is cancelled, as net/http does.
func (c *h1fastConn) clientFailed() {
	if x := c.cr.current(); x != nil {
		x.cancel(context.Canceled)
	}
}

func (c *h1fastConn) closeWriteAndWait() {
	c.bw.Flush()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	time.Sleep(lingerAfterUnreadBody)
}

// connReader sits under the read buffer. It notes read failures, and runs
// the background read (one byte, kept for the next request) that watches
// for the client leaving while the handler works.
type connReader struct {
	c       *h1fastConn
	mu      sync.Mutex
	live    *reqCtx // the request whose handler runs; nil between requests (current)
	inRead  bool    // a background read is running
	aborted bool
	hasByte bool
	b       [1]byte
	done    chan struct{}
}

func (cr *connReader) Read(p []byte) (int, error) {
	cr.mu.Lock()
	if cr.hasByte && len(p) > 0 {
		p[0] = cr.b[0]
		cr.hasByte = false
		cr.mu.Unlock()
		return 1, nil
	}
	cr.mu.Unlock()
	n, err := cr.c.nc.Read(p)
	if err != nil {
		cr.c.clientFailed()
	}
	return n, err
}

// begin and end bracket x's handler: only then may a background read
// run for it.
func (cr *connReader) begin(x *reqCtx) {
	cr.mu.Lock()
	cr.live = x
	cr.mu.Unlock()
}

func (cr *connReader) end() {
	cr.mu.Lock()
	cr.live = nil
	cr.abortLocked()
}

// current is the request whose handler runs, nil between requests.
func (cr *connReader) current() *reqCtx {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.live
}

// startBackground starts the background read for x, unless x's handler has
// returned: a goroutine it left behind that asks for Done late must not
// put a read on the connection while the next request is read from it.
func (cr *connReader) startBackground(x *reqCtx) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.live != x || cr.inRead || cr.hasByte {
		return
	}
	cr.inRead = true
	cr.done = make(chan struct{})
	cr.c.setReadDeadline(time.Time{})
	go cr.backgroundRead()
}

func (cr *connReader) backgroundRead() {
	n, err := cr.c.nc.Read(cr.b[:])
	cr.mu.Lock()
	if n == 1 {
		cr.hasByte = true
	}
	failed := err != nil && !(cr.aborted && isTimeout(err))
	cr.aborted, cr.inRead = false, false
	close(cr.done)
	cr.mu.Unlock()
	if failed {
		cr.c.clientFailed()
	}
}

// abort stops a running background read and waits for it.
func (cr *connReader) abort() {
	cr.mu.Lock()
	cr.abortLocked()
}

// abortLocked is abort with cr.mu held; it releases it.
func (cr *connReader) abortLocked() {
	if !cr.inRead {
		cr.mu.Unlock()
		return
	}
	cr.aborted = true
	cr.c.setReadDeadline(aLongTimeAgo)
	done := cr.done
	cr.mu.Unlock()
	<-done
	cr.c.setReadDeadline(time.Time{})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// h1body is a Content-Length request body read from the connection's
// buffer. A nil *h1body is a request without one. mu serialises reads
// only: the state others look at (remain, closed) is atomic, so asking
// whether the body is done never waits for a read blocked on the client.
type h1body struct {
	c      *h1fastConn
	x      *reqCtx
	mu     sync.Mutex
	remain atomic.Int64
	closed atomic.Bool
	watch  atomic.Bool // start the client watch at EOF
	err    error       // sticky read error, under mu
}

func (b *h1body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.readLocked(p)
	if err == io.EOF && n > 0 && b.watch.Load() {
		b.c.cr.startBackground(b.x)
	}
	return n, err
}

// readLocked reads from the connection's buffer, at most what is left.
func (b *h1body) readLocked(p []byte) (int, error) {
	remain := b.remain.Load()
	switch {
	case b.err != nil:
		return 0, b.err
	case remain == 0:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if int64(len(p)) > remain {
		p = p[:remain]
	}
	n, err := b.c.br.Read(p)
	remain -= int64(n)
	b.remain.Store(remain)
	switch {
	case remain == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// Close marks the body closed for the handler; the connection decides what
// to do with unread bytes.
func (b *h1body) Close() error {
	b.closed.Store(true)
	return nil
}

// close takes the body from whoever reads it: it waits for a read in
// progress (the caller cut it short with a deadline).
func (b *h1body) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closed.Store(true)
	b.mu.Unlock()
}

// discard reads what is left of the body and drops it; it reports whether
// it got to the end. The caller sets the deadline.
func (b *h1body) discard() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return false // a read failed (client gone, slow-client limit): no hope
	}
	for {
		n := min(b.remain.Load(), int64(b.c.br.Size()))
		if n == 0 {
			return true
		}
		if _, err := b.c.br.Discard(int(n)); err != nil {
			return false
		}
		b.remain.Add(-n)
	}
}

func (b *h1body) eof() bool { return b == nil || b.remain.Load() == 0 }

// watchAtEOF reports whether the body is read already; if not, the client
// watch starts at its end.
func (b *h1body) watchAtEOF() bool {
	b.watch.Store(true)
	return b.remain.Load() == 0
}

// yieldIfAlone is called once a response has been written out whole. When
// no other request waits for its answer, the thread will soon go idle
// anyway, and a client on this machine that the write woke may be queued
// behind it on this CPU: yielding lets the client run first
// (sockio.YieldCPU). Under load other requests wait and nothing is
// yielded. Responses already streaming (event streams, long downloads) do
// not count: they wait on their upstream, not on this thread.
func (c *h1fastConn) yieldIfAlone() {
	if c.s.peerYield && c.s.unanswered.Load() == 0 {
		yieldCPU()
	}
}

// yieldCPU is sockio.YieldCPU; tests count the calls.
var yieldCPU = sockio.YieldCPU
