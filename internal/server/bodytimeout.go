package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBodyReadTimeout is how long one read of a request body may wait for
// the client's next bytes (slow POST), like nginx's client_body_timeout. It
// bounds the pauses, not the upload: a large body sent at any steady pace is
// never cut off.
const DefaultBodyReadTimeout = 60 * time.Second

// orDefault applies the Options convention: zero means def, negative means
// no limit (returned as 0).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (o Options) bodyReadTimeout() time.Duration {
	return orDefault(o.BodyReadTimeout, DefaultBodyReadTimeout)
}

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read
// or write on the connection (HTTP/1) or stream (HTTP/2) fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// clientTimeouts wraps h so that a client that stops sending its request
// body (BodyReadTimeout) or stops reading the response (WriteIdleTimeout)
// is cut off. o has its defaults applied. Both limits bound one blocked
// read of the body or one write of the response, never the whole request:
// idle periods of the handler itself (waiting for the upstream, a quiet
// event stream) never count. HTTP/1 moves the connection's deadlines
// before its reads and writes (see coarseSlack); where those deadlines are
// not ours to move (HTTP/2 streams, or the server's own ReadTimeout or
// WriteTimeout set), a watchdog notes every blocked read and write and,
// when one has lasted its limit, sets a deadline in the past on the stream
// or connection through http.ResponseController.
func clientTimeouts(h http.Handler, o Options) http.Handler {
	th := &timeoutHandler{
		h:     h,
		read:  o.bodyReadTimeout(),
		write: o.writeIdleTimeout(),
		// With a WriteTimeout net/http sets a write deadline for every
		// request (HTTP/1) or stream (HTTP/2), which already bounds the
		// final flush and must not be moved.
		boundFinalFlush: o.WriteTimeout <= 0,
		// HTTP/1 connection deadlines are free for our use only when the
		// server sets none of its own for the whole request.
		coarseRead:  o.ReadTimeout <= 0,
		coarseWrite: o.WriteTimeout <= 0,
		log:         o.Logger,
	}
	th.readSlack, th.writeSlack = slackFor(th.read), slackFor(th.write)
	if th.read == 0 && th.write == 0 {
		return h
	}
	th.dog = newWatchdog(th)
	return th
}

type timeoutHandler struct {
	h                       http.Handler
	read, write             time.Duration
	boundFinalFlush         bool
	coarseRead, coarseWrite bool
	readSlack, writeSlack   int64 // nanoseconds, see coarseSlack
	log                     *slog.Logger
	dog                     *watchdog
}

// coarseSlack is how stale an HTTP/1 connection deadline may get before a
// read or write moves it: a blocked I/O is cut off between limit-slack and
// limit after it began, and a response's many writes cost one deadline
// update between them. The slack is at most an eighth of the limit; the
// watchdog ticks at the same slack.
const coarseSlack = time.Second

func slackFor(limit time.Duration) int64 { return int64(min(coarseSlack, limit/8)) }

// connDeadlines is what net/http's HTTP/1 ResponseWriter offers (through
// http.ResponseController) to move the connection's deadlines.
type connDeadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// reqWatch is the per-request state: one allocation holds the body and
// response wrappers.
type reqWatch struct {
	th    *timeoutHandler
	w     http.ResponseWriter // the ResponseWriter we wrap
	r     *http.Request
	body  watchedBody
	rw    watchedHijacker // rw.watchedWriter for HTTP/2
	wrote bool            // a final status or body bytes went out
	// The watchdog's part (watchdog.go): whether it watches the body's
	// reads and the response's writes, when the one in progress began
	// (monoNow, 0 when none is), which are due to be cut off, and the
	// request's place in its list. mu orders a cut-off against the end
	// of the request and a hijack: neither may be overtaken by it.
	watchRd, watchWr      bool
	readSince, writeSince atomic.Int64
	readDue, writeDue     atomic.Bool
	mu                    sync.Mutex
	prev, next            *reqWatch
	// HTTP/1: the connection's deadlines are moved before I/O instead
	// of the watchdog watching it (see coarseSlack). conn is nil when
	// both limits use the watchdog.
	conn                  connDeadlines
	coarseRd, coarseWr    bool
	expectContinue        bool         // a body read may write "100 Continue"
	readArmed, writeArmed atomic.Int64 // monoNow() when last moved, 0 never
	readFired             atomic.Bool
	hijacked              atomic.Bool
	done                  atomic.Bool
}

func (th *timeoutHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := &reqWatch{th: th, w: w, r: r}
	if r.ProtoMajor == 1 {
		if c, ok := w.(connDeadlines); ok {
			g.conn = c
			g.coarseRd = th.coarseRead && th.read > 0
			g.coarseWr = th.coarseWrite && th.write > 0
			g.expectContinue = r.Header.Get("Expect") != ""
		}
	}
	if th.read > 0 && r.Body != nil && r.Body != http.NoBody {
		g.watchRd = !g.coarseRd
		g.body = watchedBody{ReadCloser: r.Body, g: g}
		// In place, like http.MaxBytesReader, and put back before
		// returning: net/http looks at the type of r.Body after the
		// handler to decide whether the connection can be reused, and
		// must see its own body there.
		orig := r.Body
		r.Body = &g.body
		defer func() { r.Body = orig }()
	}
	g.watchWr = th.write > 0 && !g.coarseWr
	if !g.watchRd && !g.watchWr && g.body.g == nil && !g.coarseWr {
		th.h.ServeHTTP(w, r)
		return
	}
	g.rw.watchedWriter = watchedWriter{ResponseWriter: w, g: g}
	var out http.ResponseWriter = &g.rw.watchedWriter
	if _, ok := w.(http.Hijacker); ok {
		out = &g.rw
	}
	if g.watchRd || g.watchWr {
		// Registered before the body is handed out: the transport may
		// read it on another goroutine.
		th.dog.add(g)
	}
	panicked := true
	defer func() {
		if panicked {
			g.finish() // no cut-off may touch w once net/http has it back
		}
	}()
	th.h.ServeHTTP(out, r)
	panicked = false
	g.finish()
	if g.hijacked.Load() {
		return
	}
	if g.readFired.Load() && !g.wrote {
		// The handler gave up on the body and answered nothing (the
		// proxy takes the cancelled request for a client that left).
		// Without an answer net/http would send "200 OK": say what
		// happened instead, as nginx does, and close.
		g.requestTimeout()
		return
	}
	// net/http writes what is still buffered (up to 4 KiB and, for
	// HTTP/1, the last chunk) after the handler returned, outside the
	// watch. Bound that write with a deadline: per stream on HTTP/2, on
	// the connection on HTTP/1, where net/http (Go 1.26) clears it once
	// the response is out. Not when the request is over already (client
	// gone, stream reset): on HTTP/2 the deadline's timer would outlive
	// the closed stream and pin it until it fires, which a reset flood
	// would turn into memory.
	switch {
	case g.coarseWr:
		g.armWrite() // boundFinalFlush holds: coarse needs WriteTimeout off
	case g.watchWr && th.boundFinalFlush && r.Context().Err() == nil:
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(th.write))
	}
}

// beginWrite and endWrite bracket every call that may write to the client.
func (g *reqWatch) beginWrite() {
	switch {
	case g.coarseWr:
		g.armWrite()
	case g.watchWr:
		g.writeSince.Store(monoNow())
	}
}

func (g *reqWatch) endWrite(err error) {
	switch {
	case g.watchWr:
		g.writeSince.Store(0)
	case g.coarseWr && errors.Is(err, os.ErrDeadlineExceeded) && !g.done.Load():
		g.th.log.Debug("closing slow client: response write blocked",
			"timeout", g.th.write.String(), "remote", g.r.RemoteAddr, "uri", g.r.RequestURI)
	}
}

// armWrite moves the connection's write deadline to th.write from now,
// unless it was moved less than coarseSlack ago.
func (g *reqWatch) armWrite() {
	// A hijacked connection belongs to the tunnel: a deadline set now
	// would cut it off.
	if !g.hijacked.Load() && arm(&g.writeArmed, g.th.writeSlack) {
		_ = g.conn.SetWriteDeadline(time.Now().Add(g.th.write))
	}
}

// arm reports whether a deadline last moved at *last must move now, and
// notes that it does. Atomic: a 1xx relay may write while the body is read.
func arm(last *atomic.Int64, slack int64) bool {
	now := monoNow()
	prev := last.Load()
	if prev != 0 && now-prev < slack {
		return false
	}
	last.Store(now)
	return true
}

// monoNow is nanoseconds on the monotonic clock: a wall-clock step must not
// make a deadline look fresh.
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

var monoBase = time.Now()

// beginRead and endRead bracket every read of the request body.
func (g *reqWatch) beginRead() {
	if g.expectContinue && g.coarseWr {
		// net/http writes "100 Continue" from inside this read, outside
		// any write of ours: the write deadline may be long past.
		g.armWrite()
	}
	if g.watchRd {
		g.readSince.Store(monoNow())
		return
	}
	if g.coarseRd && !g.hijacked.Load() && arm(&g.readArmed, g.th.readSlack) {
		_ = g.conn.SetReadDeadline(time.Now().Add(g.th.read))
	}
}

func (g *reqWatch) endRead(err error) {
	if g.watchRd {
		g.readSince.Store(0)
		return
	}
	if g.coarseRd && errors.Is(err, os.ErrDeadlineExceeded) && !g.readFired.Load() {
		// net/http has cancelled the request's context and will not
		// reuse the connection, as with the watchdog's cut-off.
		g.readFired.Store(true)
		g.th.log.Debug("closing slow client: no request body bytes",
			"timeout", g.th.read.String(), "remote", g.r.RemoteAddr, "uri", g.r.RequestURI)
	}
}

// requestTimeout answers 408 and closes an HTTP/1 connection: the rest of
// the body may still be on its way and must not be read as a request.
func (g *reqWatch) requestTimeout() {
	h := g.w.Header()
	clear(h)
	if g.r.ProtoMajor == 1 {
		h.Set("Connection", "close")
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if g.th.write > 0 {
		_ = http.NewResponseController(g.w).SetWriteDeadline(time.Now().Add(g.th.write))
	}
	g.w.WriteHeader(http.StatusRequestTimeout)
	_, _ = io.WriteString(g.w, "request body timeout\n")
}

// finish ends the watch: what the handler left behind is no longer the
// client's fault. A cut-off in progress completes first.
func (g *reqWatch) finish() {
	g.mu.Lock()
	g.done.Store(true)
	g.mu.Unlock()
	if g.watchRd || g.watchWr {
		g.th.dog.remove(g)
	}
}

// fire cuts off what the watchdog found blocked for its limit, unless the
// request ended or the connection was hijacked meanwhile.
func (g *reqWatch) fire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done.Load() || g.hijacked.Load() {
		return
	}
	if g.readDue.Swap(false) {
		g.readTimedOut()
	}
	if g.writeDue.Swap(false) {
		g.writeTimedOut()
	}
}

// readTimedOut runs when one read of the body waited th.read for bytes.
func (g *reqWatch) readTimedOut() {
	g.readFired.Store(true)
	g.th.log.Debug("closing slow client: no request body bytes",
		"timeout", g.th.read.String(), "remote", g.r.RemoteAddr, "uri", g.r.RequestURI)
	// HTTP/1: the blocked read fails, net/http cancels the request's
	// context and will not reuse the connection. HTTP/2: the body returns
	// an error wrapping os.ErrDeadlineExceeded; the handler answers, and
	// net/http resets the stream since the client did not finish it.
	// Either way the error satisfies errors.Is(err, os.ErrDeadlineExceeded).
	_ = http.NewResponseController(g.w).SetReadDeadline(aLongTimeAgo)
}

// writeTimedOut runs when one write to the client was blocked th.write.
func (g *reqWatch) writeTimedOut() {
	g.th.log.Debug("closing slow client: response write blocked",
		"timeout", g.th.write.String(), "remote", g.r.RemoteAddr, "uri", g.r.RequestURI)
	// HTTP/1: the blocked write fails and the connection is closed.
	// HTTP/2: the stream is reset (RST_STREAM INTERNAL_ERROR).
	_ = http.NewResponseController(g.w).SetWriteDeadline(aLongTimeAgo)
}

// watchedBody arms the read watchdog around every Read of the request body.
type watchedBody struct {
	io.ReadCloser
	g *reqWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.g.beginRead()
	n, err := b.ReadCloser.Read(p)
	b.g.endRead(err)
	return n, err
}
