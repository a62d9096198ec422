package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// coalescingConn is what net/http's HTTP/2 server writes an HTTP/2
// connection (h2c, or h2 over TLS) through. That server flushes its frame buffer whenever its
// write queue runs dry, and a handler waits for its HEADERS frame to be
// buffered before it queues its DATA; so each response costs two write
// syscalls, and on a loopback or LAN socket a write is the largest single
// cost of an HTTP/2 request. Here a flush is only copied into pending;
// a drain goroutine, which lets the other runnable goroutines go first,
// writes whatever has gathered by then, other streams' frames included,
// in one syscall. An h2c small GET went from 1.9 client writes to 0.24
// (docs/performance.md, step 10).
//
// What a Write no longer means is the one thing that changes: it returns
// once the bytes are accepted, not written. A write that fails is returned
// by the next Write, and closes the connection so that its reader sees it
// too. The bytes accepted and not written are bounded (coalesceLimit), and
// so is how long a write may make no progress (writeIdle): the drain sets
// the write deadline itself, per syscall, the way net/http's
// WriteByteTimeout would, and ignores the deadlines net/http sets around
// a Write, which would otherwise be lifted while the drain is still
// writing.
type coalescingConn struct {
	net.Conn
	// on: writes coalesce. A TLS connection is wrapped before its ALPN is
	// known and starts off (every method passes through); it is switched
	// on for good when net/http's HTTP/2 server starts serving it
	// (switchOnForH2). decided: that check was made.
	on, decided atomic.Bool
	writeIdle   time.Duration // 0: a write may stall for ever, as in net/http
	slack       time.Duration // how far the write deadline may lag (slackFor)
	wdl         connDeadline  // written under mu only

	mu       sync.Mutex
	room     sync.Cond // pending shrank, or the connection failed or closed
	pending  []byte    // accepted, not yet given to the socket
	draining bool      // a drain goroutine, or writeNow, owns the socket's writes
	err      error     // why writing failed; every later Write returns it
	closed   bool
	closeBy  time.Time // when closed: the last moment the drain may write
}

// coalesceLimit bounds the bytes accepted and not yet written: a Write
// that would pass it waits for the drain, as a write to a full socket
// buffer would. A Write larger than it waits until nothing is pending and
// is then written on the caller's goroutine (writeNow). So a connection
// whose client stopped reading holds at most twice this (a batch being
// written and the next one), beside net/http's own 4 KiB write buffer;
// small responses gather by the dozen well within it.
const coalesceLimit = 8 << 10

// closeFlushTimeout is how long a closed connection's drain may still
// write what was accepted before Close (the final GOAWAY, usually):
// net/http's HTTP/2 server waits as long for a client to take a GOAWAY.
const closeFlushTimeout = time.Second

func newCoalescingConn(nc net.Conn, writeIdle time.Duration, on bool) *coalescingConn {
	c := &coalescingConn{Conn: nc, writeIdle: writeIdle, slack: time.Duration(slackFor(writeIdle))}
	c.room.L = &c.mu
	c.on.Store(on)
	c.decided.Store(on)
	return c
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if !c.on.Load() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	big := len(p) > coalesceLimit
	for c.err == nil && !c.closed && (big && (c.draining || len(c.pending) > 0) ||
		!big && len(c.pending)+len(p) > coalesceLimit) {
		c.room.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if big {
		return c.writeNow(p)
	}
	if c.pending == nil {
		c.pending = getCoalesceBuf()
	}
	c.pending = append(c.pending, p...)
	if !c.draining {
		c.draining = true
		go c.drain()
	}
	c.mu.Unlock()
	return len(p), nil
}

// writeNow writes p on the caller's goroutine, as a plain connection
// would: a write too large to gather with others (a whole DATA frame) is
// not copied, and the caller waits for it as it did without coalescing.
// It is called with mu held and nothing pending or draining, and returns
// with mu released.
func (c *coalescingConn) writeNow(p []byte) (int, error) {
	c.draining = true // the socket is ours until the write ends
	c.setWriteDeadlineLocked()
	c.mu.Unlock()
	n, err := c.writeBatch(p)
	c.mu.Lock()
	if err != nil && c.err == nil {
		c.err = err
	}
	c.draining = false
	if c.err == nil && len(c.pending) > 0 {
		c.draining = true
		go c.drain()
	}
	shut := !c.draining && (c.err != nil || c.closed)
	c.room.Broadcast()
	c.mu.Unlock()
	if shut {
		c.Conn.Close()
	}
	return n, err
}

// drain writes pending until there is none, then ends; a Write starts the
// next one. Before each batch it yields: the goroutines it would otherwise
// overtake are the handlers and the server's frame loop, about to add
// their frames to the same batch.
func (c *coalescingConn) drain() {
	var spare []byte
	for {
		runtime.Gosched()
		c.mu.Lock()
		if c.err != nil || len(c.pending) == 0 {
			break // with mu held
		}
		batch := c.pending
		c.pending = spare[:0]
		c.room.Broadcast()
		c.setWriteDeadlineLocked()
		c.mu.Unlock()
		_, err := c.writeBatch(batch)
		c.mu.Lock()
		spare = batch
		if err != nil && c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	c.draining = false
	if len(c.pending) == 0 {
		putCoalesceBuf(c.pending)
		c.pending = nil
	}
	putCoalesceBuf(spare)
	shut := c.err != nil || c.closed
	c.room.Broadcast()
	c.mu.Unlock()
	if shut {
		c.Conn.Close()
	}
}

// setWriteDeadlineLocked bounds the next syscall: writeIdle from now (kept
// if the deadline in place is within slack of it), and never past closeBy.
func (c *coalescingConn) setWriteDeadlineLocked() {
	set := c.Conn.SetWriteDeadline
	switch {
	case c.closed:
		c.wdl.set(set, c.closeBy)
	case c.writeIdle > 0:
		c.wdl.extend(set, time.Now().Add(c.writeIdle), c.slack)
	}
}

// writeBatch writes b whole. A syscall that hits the deadline after some
// progress is retried with a fresh one, as net/http's WriteByteTimeout
// does: the limit is on time without progress, not on the whole batch.
func (c *coalescingConn) writeBatch(b []byte) (int, error) {
	written := 0
	for {
		n, err := c.Conn.Write(b[written:])
		written += n
		if err == nil || n == 0 || !isTimeout(err) || written == len(b) {
			return written, err
		}
		c.mu.Lock()
		closed := c.closed
		c.setWriteDeadlineLocked()
		c.mu.Unlock()
		if closed {
			return written, err
		}
	}
}

// Close returns at once. With writes pending, the drain writes them (for
// at most closeFlushTimeout) and then closes the socket; the read side is
// shut now, so a goroutine blocked reading sees the close at once.
func (c *coalescingConn) Close() error {
	if !c.on.Load() {
		return c.Conn.Close()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	c.room.Broadcast()
	if !c.draining {
		c.mu.Unlock()
		return c.Conn.Close()
	}
	c.closeBy = time.Now().Add(closeFlushTimeout)
	c.setWriteDeadlineLocked()
	c.mu.Unlock()
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		cr.CloseRead()
	}
	return nil
}

// SetWriteDeadline is ignored: the drain owns the write deadline (see the
// type's comment). net/http's HTTP/2 server sets one only around its own
// writes, for WriteByteTimeout, which writeIdle stands in for.
func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	if !c.on.Load() {
		return c.Conn.SetWriteDeadline(t)
	}
	return nil
}

// SetDeadline sets the read deadline only, for the same reason.
func (c *coalescingConn) SetDeadline(t time.Time) error {
	if !c.on.Load() {
		return c.Conn.SetDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

// coalescingListener wraps a TLS listener's connections, switched off,
// for switchOnForH2 to switch on those that negotiate h2.
type coalescingListener struct {
	net.Listener
	writeIdle time.Duration
}

func (l coalescingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newCoalescingConn(nc, l.writeIdle, false), nil
}

// switchOnForH2 is the server's ConnState hook. net/http's HTTP/2 server
// reports a connection active first thing, once it has read the client's
// preface; at that point its only write so far, its SETTINGS, has been
// issued and completes before it issues another, so the switch cannot
// reorder bytes. An HTTP/1.1 connection's first report (its first request)
// leaves it off for good.
func switchOnForH2(nc net.Conn, st http.ConnState) {
	if st != http.StateActive {
		return
	}
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return
	}
	c, ok := tc.NetConn().(*coalescingConn)
	if !ok || c.decided.Swap(true) {
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		c.on.Store(true)
	}
}

// coalesceBufs keeps batch buffers between bursts, so an idle connection
// holds none. They are whole arrays: pending never grows past
// coalesceLimit, and putting an array pointer back allocates nothing
// (a *[]byte would, on every put).
var coalesceBufs = sync.Pool{New: func() any { return new([coalesceLimit]byte) }}

func getCoalesceBuf() []byte { return coalesceBufs.Get().(*[coalesceLimit]byte)[:0] }

func putCoalesceBuf(b []byte) {
	if cap(b) == coalesceLimit {
		coalesceBufs.Put((*[coalesceLimit]byte)(b[:coalesceLimit]))
	}
}
