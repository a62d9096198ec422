package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/internal/sockio"
)

// h1conn is one keep-alive HTTP/1.1 connection to an upstream, used by one
// request at a time on the caller's goroutine.
type h1conn struct {
	nc   net.Conn
	raw  syscall.RawConn // for the liveness check; nil if unsupported
	addr string
	br   *bufio.Reader
	bw   *bufio.Writer

	read, written int64 // bytes through the socket, to tell "nothing sent/received"
	readErr       error // last error from the socket; bufio may hide it behind a partial line
	headerLimit   int64 // bytes still allowed while reading response headers; <0: no limit
	idleSince     time.Time
	reused        bool

	peekBuf  [1]byte
	peekFn   func(fd uintptr) // built once per connection: no allocation per check
	peekDead bool

	// One exchange's deadlines and client watch (h1watch.go).
	ctx         context.Context // the client's, nil when it cannot end
	stop        func() bool     // the registered watch, once escalated
	window      bool            // the fast window's deadline is set
	windowWrite bool            // ... on writes too
	windowEnd   time.Time
	readDL      time.Time // the socket's read deadline as last set, zero for none
	inHeaders   bool
	hdrDeadline time.Time // zero: no response header timeout
}

var errResponseHeaderTooLarge = errors.New("upstream response headers exceed the limit")

func (c *h1conn) Read(p []byte) (int, error) {
	if c.headerLimit >= 0 {
		if c.headerLimit == 0 {
			return 0, errResponseHeaderTooLarge
		}
		if int64(len(p)) > c.headerLimit {
			p = p[:c.headerLimit]
		}
	}
	n, err := c.nc.Read(p)
	for n == 0 && err != nil {
		var again bool
		if again, err = c.tryAgain(err); !again {
			break
		}
		n, err = c.nc.Read(p)
	}
	c.read += int64(n)
	if err != nil {
		c.readErr = err
	}
	if c.headerLimit >= 0 {
		c.headerLimit -= int64(n)
	}
	return n, err
}

func (c *h1conn) Write(p []byte) (int, error) {
	c.beforeWrite(len(p))
	n, err := c.nc.Write(p)
	for err != nil {
		var again bool
		if again, err = c.tryAgain(err); !again {
			break
		}
		var m int
		m, err = c.nc.Write(p[n:])
		n += m
	}
	c.written += int64(n)
	return n, err
}

func (c *h1conn) close() { c.nc.Close() }

// alive reports whether an idle connection still looks usable: the
// upstream has neither closed it nor sent unsolicited bytes. Go's own
// transport learns this from a reader goroutine per connection; we ask the
// kernel with a non-blocking peek instead.
func (c *h1conn) alive() bool {
	if c.raw == nil {
		return true
	}
	c.peekDead = false
	// Control, not Read: the peek never waits, and Read would refuse to
	// run past the read deadline an idle connection keeps (h1watch.go).
	if err := c.raw.Control(c.peekFn); err != nil {
		return false
	}
	return !c.peekDead
}

func (t *Transport) newConn(ctx context.Context, addr string) (*h1conn, error) {
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h1conn{nc: sockio.Wrap(nc), addr: addr, headerLimit: -1}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(c, 4<<10)
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.peekFn = c.peek
		}
	}
	return c, nil
}

// getConn returns an idle connection to addr, or dials a new one.
func (t *Transport) getConn(ctx context.Context, addr string) (*h1conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		conns := t.idle[addr]
		if len(conns) == 0 {
			t.mu.Unlock()
			break
		}
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		t.mu.Unlock()
		if now.Sub(c.idleSince) < t.opts.IdleConnTimeout && c.alive() {
			c.reused = true
			return c, nil
		}
		c.close()
	}
	return t.newConn(ctx, addr)
}

// putConn makes c available for the next request, dropping connections
// that have been idle too long.
func (t *Transport) putConn(c *h1conn) {
	c.idleSince = time.Now()
	c.read, c.written, c.readErr = 0, 0, nil
	t.mu.Lock()
	conns := t.idle[c.addr]
	var stale []*h1conn
	// The oldest are at the front; drop those past the idle timeout or
	// beyond the per-host limit.
	drop := 0
	for drop < len(conns) && (c.idleSince.Sub(conns[drop].idleSince) >= t.opts.IdleConnTimeout ||
		len(conns)-drop >= t.opts.MaxIdleConnsPerHost) {
		stale = append(stale, conns[drop])
		drop++
	}
	if drop > 0 {
		conns = append(conns[:0], conns[drop:]...)
	}
	t.idle[c.addr] = append(conns, c)
	t.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
}
