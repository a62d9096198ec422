package proxy

import (
	"context"
	"time"
)

// The synchronous path must abort blocked upstream I/O when the client
// leaves. Registering a context.AfterFunc for that costs five allocations
// and a lock on the request's context per request, and almost every
// exchange finishes long before anyone could leave. So an exchange starts
// with a short deadline instead (fastWindow); only when I/O is still
// blocked at its end does the connection escalate: it checks the context,
// registers the watch and puts the real deadlines in place, and the I/O
// carries on where it stopped.
//
// Setting a deadline takes the poller's lock and resets a runtime timer,
// twice per exchange if each one set and cleared its own. So the window's
// read deadline stays on the connection when the exchange ends, and the
// next exchange keeps it while at least half a window is left: a busy
// connection sets it about once per fastWindow/2 instead of twice per
// request. A shorter window only means an earlier check of the client.
// The idle connection's liveness peek ignores deadlines (h1conn.alive).

// fastWindow is how long an exchange runs before it watches the client's
// context: the longest a client's leaving can go unnoticed.
const fastWindow = 100 * time.Millisecond

// watchWriteAbove is the request size from which writes get the window's
// deadline too. A smaller request is one write into an idle connection's
// empty send buffer (at least 4 KiB on Linux), which cannot block.
const watchWriteAbove = 4 << 10

// beginExchange sets up the deadlines of one exchange on c. With eager the
// watch starts at once: a request that came over HTTP/2, where a client can
// reset streams by the thousand and each would otherwise hold an upstream
// request for the whole window (TestH2ResetFloods).
func (c *h1conn) beginExchange(ctx context.Context, eager bool) {
	c.stop = nil
	c.inHeaders = true
	c.hdrDeadline = time.Time{}
	c.windowWrite = false
	if eager {
		c.setReadDeadline(time.Time{}) // a window's, left by an earlier exchange
		if ctx.Done() == nil {
			c.ctx, c.window = nil, false // nobody can leave: nothing to watch
			return
		}
		c.ctx, c.window = ctx, false
		c.stop = context.AfterFunc(ctx, c.abortIO)
		return
	}
	// Not ctx.Done here: a server may start watching the client only once
	// someone asks for it (sluice's own HTTP/1 loop does), and the point
	// of the window is that most exchanges never ask.
	c.ctx, c.window = ctx, true
	if now := time.Now(); c.readDL.IsZero() || c.readDL.Sub(now) < fastWindow/2 {
		c.setReadDeadline(now.Add(fastWindow))
	}
	c.windowEnd = c.readDL
}

// setReadDeadline sets the socket's read deadline unless it is set to t
// already.
func (c *h1conn) setReadDeadline(t time.Time) {
	if !t.Equal(c.readDL) {
		c.nc.SetReadDeadline(t)
		c.readDL = t
	}
}

// beforeWrite gives a write that might block the window's deadline.
func (c *h1conn) beforeWrite(n int) {
	if c.window && !c.windowWrite && c.written+int64(n) >= watchWriteAbove {
		c.windowWrite = true
		c.nc.SetWriteDeadline(c.windowEnd)
	}
}

// startHeaders starts the response header timeout d (0: none), counted from
// now, when the request has been written.
func (c *h1conn) startHeaders(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	c.hdrDeadline = time.Now().Add(d)
	if c.window {
		if c.hdrDeadline.Before(c.windowEnd) {
			c.setReadDeadline(c.hdrDeadline)
		}
		return nil
	}
	c.setReadDeadline(c.hdrDeadline)
	return c.recheck()
}

// endHeaders lifts the header timeout once the final response's headers
// are in. A window still open stays: it covers the body.
func (c *h1conn) endHeaders() error {
	c.inHeaders = false
	if c.window || c.hdrDeadline.IsZero() {
		return nil
	}
	c.setReadDeadline(time.Time{})
	return c.recheck()
}

// recheck catches the watch having fired just before a deadline was set:
// its past deadline was overwritten. ctx.Err is set before the watch runs,
// so checking after setting cannot miss it.
func (c *h1conn) recheck() error {
	if c.ctx != nil {
		return c.ctx.Err()
	}
	return nil
}

// windowExpired reports whether err is the window's deadline passing; if so
// it escalates, and a nil error says the I/O should be tried again.
func (c *h1conn) windowExpired(err error) (bool, error) {
	if !c.window || !isTimeout(err) {
		return false, nil
	}
	if !c.hdrDeadline.IsZero() && c.inHeaders && !time.Now().Before(c.hdrDeadline) {
		return false, nil // the header timeout itself: a real timeout
	}
	c.window = false
	if err := c.ctx.Err(); err != nil {
		return true, err
	}
	if c.windowWrite {
		c.nc.SetWriteDeadline(time.Time{})
		c.windowWrite = false
	}
	if c.inHeaders && !c.hdrDeadline.IsZero() {
		c.setReadDeadline(c.hdrDeadline)
	} else {
		c.setReadDeadline(time.Time{})
	}
	// Set after the deadlines above, so a watch that runs at once (the
	// client just left) has the last word.
	if c.ctx.Done() != nil {
		c.stop = context.AfterFunc(c.ctx, c.abortIO)
	}
	return true, nil
}

// tryAgain says whether an I/O that failed with err should be tried again
// because only the window ended (see windowExpired); otherwise it returns
// the error to report.
func (c *h1conn) tryAgain(err error) (bool, error) {
	expired, werr := c.windowExpired(err)
	switch {
	case !expired:
		return false, err
	case werr != nil:
		return false, werr
	}
	return true, nil
}

func (c *h1conn) abortIO() { c.nc.SetDeadline(aLongTimeAgo) }

// endExchange stops the watch and clears the window's write deadline; its
// read deadline stays for the next exchange (see above). It reports false
// when the watch fired: its past deadline poisons the connection.
func (c *h1conn) endExchange() bool {
	clean := true
	if c.stop != nil {
		clean = c.stop()
		c.stop = nil
	}
	if c.window {
		c.window = false
		if c.windowWrite {
			c.nc.SetWriteDeadline(time.Time{})
			c.windowWrite = false
		}
	}
	c.ctx = nil
	return clean
}
