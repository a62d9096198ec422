package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// h1server is the fast HTTP/1.1 loop for plain-TCP listeners. net/http's
// server spends, per request, a background-read goroutine (a park, a wake
// and two deadline changes), a cancellable context and its bookkeeping;
// for a proxy whose own work is a few microseconds that is a third of the
// cost. The fast loop serves the common request itself (h1head.go says
// which), watches for a leaving client only when someone asks (h1ctx.go),
// and hands every other connection, untouched, to net/http's server, which
// keeps serving it: HTTP/2 prior knowledge, HTTP/1.0, chunked or
// Expect: 100-continue uploads, upgrades, oversized heads, malformed input.
//
// It is used when nothing it does not do is asked for: no TLS (ALPN and
// the handshake stay with net/http), no whole-request ReadTimeout or
// WriteTimeout. Options.StdHTTP1 turns it off.
type h1server struct {
	h             http.Handler
	o             Options
	std           *http.Server // serves handed-off connections
	handoff       *handoffListener
	log           *slog.Logger
	bodyDeadlines bool // the slow-client watch owns read deadlines during bodies
	// writeSlack is how far a write deadline may lag what the slow-client
	// watch asks for (slackFor of WriteIdleTimeout; 0 without one).
	writeSlack time.Duration
	draining   atomic.Bool
	// unanswered counts requests being served whose response has not
	// started; peerYield is !Options.NoPeerYield (see
	// h1fastConn.yieldIfAlone).
	unanswered atomic.Int32
	peerYield  bool

	mu    sync.Mutex
	conns map[*h1fastConn]struct{}
	wg    sync.WaitGroup
}

func newH1Server(h http.Handler, o Options, std *http.Server, addr net.Addr) *h1server {
	return &h1server{
		h:             h,
		o:             o,
		std:           std,
		handoff:       newHandoffListener(addr),
		log:           o.Logger,
		bodyDeadlines: o.bodyReadTimeout() > 0,
		writeSlack:    time.Duration(slackFor(o.writeIdleTimeout())),
		conns:         make(map[*h1fastConn]struct{}),
		peerYield:     !o.NoPeerYield,
	}
}

// useFastLoop reports whether o lets the fast loop serve plain HTTP/1.1.
func useFastLoop(o Options, tlsOn bool) bool {
	return !tlsOn && !o.StdHTTP1 && !forceStdHTTP1 && o.ReadTimeout <= 0 && o.WriteTimeout <= 0
}

// forceStdHTTP1 is set by the tests, to run them all on net/http's server.
var forceStdHTTP1 bool

// acceptLoop accepts until ln fails or is closed; it returns nil when it
// was closed for a shutdown. Temporary errors (out of file descriptors)
// back off as net/http does.
func (s *h1server) acceptLoop(ln net.Listener) error {
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return nil
			}
			var ne net.Error
			//lint:ignore SA1019 net/http's accept loop makes the same check (EMFILE, ENFILE)
			if errors.As(err, &ne) && ne.Temporary() {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err.Error(), "pause", pause.String())
				time.Sleep(pause)
				continue
			}
			return err
		}
		pause = 0
		c := &h1fastConn{s: s, nc: nc}
		if !s.track(c) {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

func (s *h1server) track(c *h1fastConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *h1server) forget(c *h1fastConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// handOff gives c to net/http's server, the bytes read so far first.
func (s *h1server) handOff(c *h1fastConn) {
	c.state.Store(connClosed)
	c.cr.abort()
	// net/http sets no write deadline without a WriteTimeout, and so would
	// never lift one left by a response of ours.
	c.wdl.set(c.nc.SetWriteDeadline, time.Time{})
	var nc net.Conn = c.nc
	if b, _ := c.br.Peek(c.br.Buffered()); bytes.HasPrefix(b, h2Preface) {
		nc = newCoalescingConn(nc, s.o.writeIdleTimeout(), true)
	}
	if !s.handoff.give(&replayConn{Conn: nc, c: c}) {
		c.nc.Close() // shutting down
	}
}

// beginShutdown stops new requests: connections close after the response
// in progress, idle ones at once.
func (s *h1server) beginShutdown() {
	s.mu.Lock()
	s.draining.Store(true)
	s.mu.Unlock()
	s.closeIdle()
}

func (s *h1server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.nc.Close()
		}
	}
}

// waitIdle waits until every connection is gone or ctx ends, closing idle
// ones as they become so.
func (s *h1server) waitIdle(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			s.closeIdle()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// closeAll closes every connection and cancels the requests in flight. Like
// net/http's Close it does not wait for handlers: one that ignores its
// context would hold the shutdown forever.
func (s *h1server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
		if x := c.cr.current(); x != nil {
			x.cancel(context.Canceled)
		}
	}
}

// handoffListener is the listener net/http's server accepts handed-off
// connections from.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// h2Preface opens every HTTP/2 connection; on a handed-off connection it
// means net/http's HTTP/2 server takes it (h2c with prior knowledge), and
// its writes go through a coalescingConn.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// replayConn is a handed-off connection: reads drain what the fast loop
// read ahead (the head it declined, pipelined requests, the background
// read's byte), then go on through its read buffer. net/http's HTTP/2 server
// reads frames straight from the connection it is given, a 9-byte header
// and then the payload, so without a buffer under it every frame costs two
// read syscalls; with one, a burst of frames costs one. net/http's
// HTTP/1.1 reads are as large as the buffer and go past it.
type replayConn struct {
	net.Conn
	c  *h1fastConn
	br *bufio.Reader // c.br once drained, reading from Conn
}

func (r *replayConn) Read(p []byte) (int, error) {
	if r.c != nil {
		if r.c.br.Buffered() > 0 {
			return r.c.br.Read(p)
		}
		r.c.cr.mu.Lock()
		has := r.c.cr.hasByte
		r.c.cr.mu.Unlock()
		if has {
			return r.c.cr.Read(p)
		}
		// Drained: the fast loop's buffer, now empty, reads the socket.
		r.br = r.c.br
		r.br.Reset(r.Conn)
		r.c = nil
	}
	return r.br.Read(p)
}

// CloseWrite keeps net/http's lingering close (half-close, then wait)
// working on the wrapped TCP connection.
func (r *replayConn) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return r.Conn.Close()
}
