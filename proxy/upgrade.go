package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sluiceproxy/sluice/upstream"
)

// switchProtocols handles a 101 response: check the upstream switched to
// the protocol the client asked for, hijack the client connection, and copy
// bytes both ways until both sides are done.
func (rt *roundTrip) switchProtocols(res *http.Response) {
	rt.private = false // the tunnel's goroutines use the round trip
	token := upgradeToken(res.Header)
	backConn, ok := res.Body.(io.ReadWriteCloser)
	if rt.upgrade == "" || !strings.EqualFold(token, rt.upgrade) || !ok {
		res.Body.Close()
		rt.releaseHeld(upstream.Failure, res.StatusCode)
		rt.fail(failOther, errUpstreamUpgrade)
		return
	}
	client, brw, err := http.NewResponseController(rt.w).Hijack()
	if err != nil {
		// HTTP/2 clients cannot be hijacked; they never reach here with an
		// allowed upgrade from net/http, but a wrapped writer might.
		backConn.Close()
		rt.releaseHeld(upstream.Ignored, res.StatusCode)
		rt.fail(failOther, err)
		return
	}
	rt.status = http.StatusSwitchingProtocols

	removeHopByHop(res.Header)
	applyHeaderRules(res.Header, rt.h.headerDown)
	hdr := rt.w.Header()
	for k, vv := range res.Header {
		hdr[k] = append(hdr[k], vv...)
	}
	hdr["Connection"] = []string{"Upgrade"}
	hdr["Upgrade"] = []string{token}
	if err := writeSwitching(brw.Writer, hdr); err != nil {
		client.Close()
		backConn.Close()
		rt.releaseHeld(upstream.Ignored, res.StatusCode)
		rt.clientGone(err)
		return
	}
	// Bytes the client sent right after its request (already read into the
	// server's buffer) belong to the new protocol.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := backConn.Write(b); err != nil {
			client.Close()
			backConn.Close()
			rt.releaseHeld(upstream.Failure, res.StatusCode)
			rt.err = err
			return
		}
	}

	t := &tunnel{client: client, backend: backConn}
	if !rt.h.tunnels.add(t) {
		// The handler was closed while this upgrade was in flight.
		t.close()
		rt.releaseHeld(upstream.Ignored, res.StatusCode)
		return
	}
	defer rt.h.tunnels.remove(t)
	stopWatch := context.AfterFunc(rt.in.Context(), t.close)
	defer stopWatch()

	toClient, toBackend := t.run()
	rt.written = toClient
	rt.upBytes = toBackend
	t.close()
	rt.releaseHeld(upstream.Success, res.StatusCode)
}

func writeSwitching(w *bufio.Writer, hdr http.Header) error {
	if _, err := w.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return err
	}
	if err := hdr.Write(w); err != nil {
		return err
	}
	if _, err := w.WriteString("\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

// tunnel is one upgraded connection pair.
type tunnel struct {
	client  net.Conn
	backend io.ReadWriteCloser
	once    sync.Once
}

type closeWriter interface{ CloseWrite() error }

// run copies both ways. When one side ends its stream cleanly, the other
// side's write half is closed (half-close), and copying goes on in the other
// direction; an error on either side closes everything.
func (t *tunnel) run() (toClient, toBackend int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		toBackend = t.pipe(t.backend, t.client)
	}()
	go func() {
		defer wg.Done()
		toClient = t.pipe(t.client, t.backend)
	}()
	wg.Wait()
	return
}

func (t *tunnel) pipe(dst io.Writer, src io.Reader) int64 {
	bp := getBuf()
	defer putBuf(bp)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	if err != nil {
		t.close()
		return n
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	t.close()
	return n
}

func (t *tunnel) close() {
	t.once.Do(func() {
		t.client.Close()
		t.backend.Close()
	})
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so CopyBuffer uses our
// pooled buffer instead of allocating its own.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// tunnels tracks open upgraded connections so shutdown can close them.
type tunnels struct {
	mu     sync.Mutex
	set    map[*tunnel]struct{}
	closed bool
	n      atomic.Int64
}

// add registers t; it reports false once closeAll has run.
func (ts *tunnels) add(t *tunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return false
	}
	if ts.set == nil {
		ts.set = make(map[*tunnel]struct{})
	}
	ts.set[t] = struct{}{}
	ts.n.Add(1)
	return true
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.set, t)
	ts.mu.Unlock()
	ts.n.Add(-1)
}

func (ts *tunnels) count() int { return int(ts.n.Load()) }

func (ts *tunnels) closeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.closed = true
	for t := range ts.set {
		t.close()
	}
}
