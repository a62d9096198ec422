package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// coalescingConn (h2write.go) on real loopback sockets: the bytes arrive
// whole and in order, what is accepted and not written stays bounded, a
// stalled or vanished peer fails the connection and ends the drain
// goroutine, Close flushes within its bound (also when it lands amid
// Writes), callers' write deadlines are ignored, and switched off it is
// the plain socket; and, end to end, HTTP/2 (h2c and TLS) through the
// real server answers every stream completely while going through it.
//
// Time bounds here are upper bounds only, and generous: the tests run with
// -race on busy machines. Where "at once" matters (Close, a Write or Read
// woken by Close), it is checked by state rather than by the clock: the
// woken call must have returned while the drain was still stuck on a peer
// that does not read, which it stays until closeFlushTimeout.

// ccNew wraps nc, switched on (as handOff does for h2c).
func ccNew(nc net.Conn, writeIdle time.Duration) *coalescingConn {
	return newCoalescingConn(nc, writeIdle, true)
}

// ccPair returns both ends of a loopback TCP connection: srv (accepted)
// and peer (dialled). srvSndBuf and peerRcvBuf, when not 0, shrink the
// kernel buffers so that a peer that does not read stalls the writer soon.
func ccPair(t *testing.T, srvSndBuf, peerRcvBuf int) (srv, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	pc, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var a accepted
	select {
	case a = <-ch:
	case <-time.After(5 * time.Second):
		pc.Close()
		t.Fatal("accept did not return within 5s")
	}
	if a.err != nil {
		pc.Close()
		t.Fatal(a.err)
	}
	srv, peer = a.c.(*net.TCPConn), pc.(*net.TCPConn)
	t.Cleanup(func() {
		srv.Close()
		peer.Close()
	})
	if srvSndBuf > 0 {
		if err := srv.SetWriteBuffer(srvSndBuf); err != nil {
			t.Fatal(err)
		}
	}
	if peerRcvBuf > 0 {
		if err := peer.SetReadBuffer(peerRcvBuf); err != nil {
			t.Fatal(err)
		}
	}
	return srv, peer
}

// ccNoLeaks records the goroutines running now; the function it returns
// waits (up to 5 s) for every goroutine started since to end, then fails t
// through goleak if some have not.
func ccNoLeaks(t *testing.T) func() {
	ign := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		waitFor(5*time.Second, func() bool { return goleak.Find(ign) == nil })
		goleak.VerifyNone(t, ign)
	}
}

// ccSocketClosed reports whether tc (the socket under a coalescingConn) has
// been closed.
func ccSocketClosed(tc *net.TCPConn) bool {
	rc, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}

// ccState is a consistent look at c: its pending bytes, whether the socket
// is being written (by a drain goroutine, or by a large Write on its
// caller's goroutine), whether a pending buffer is held.
func ccState(c *coalescingConn) (pending int, draining, holdsBuf bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending), c.draining, c.pending != nil
}

func ccDraining(c *coalescingConn) bool {
	_, d, _ := ccState(c)
	return d
}

// ccPattern is the test stream from offset off: every byte depends on its
// position, so a lost, doubled or reordered byte shows in a comparison.
func ccPattern(off int64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint64(off+int64(i)) * 0x9E3779B97F4A7C15
		b[i] = byte(x >> 56)
	}
	return b
}

// ccFirstDiff is where a and b first differ (or the shorter length).
func ccFirstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// ccPeerReader reads everything from a peer socket in the background.
type ccPeerReader struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	n    atomic.Int64
	err  error // how reading ended: nil for EOF
	done chan struct{}
}

// ccStartReader reads c until EOF or an error, for at most limit.
func ccStartReader(c net.Conn, limit time.Duration) *ccPeerReader {
	r := &ccPeerReader{done: make(chan struct{})}
	c.SetReadDeadline(time.Now().Add(limit))
	go func() {
		defer close(r.done)
		b := make([]byte, 64<<10)
		for {
			n, err := c.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			r.mu.Unlock()
			r.n.Add(int64(n))
			if err != nil {
				if err != io.EOF {
					r.err = err
				}
				return
			}
		}
	}()
	return r
}

// wait waits for reading to end, up to d; it reports whether it did.
func (r *ccPeerReader) wait(d time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (r *ccPeerReader) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// ccClosedByServer: how a peer's read ends when the server closed its end.
func ccClosedByServer(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || ccIsReset(err)
}

func ccIsReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// ccWrite writes p to c on another goroutine and returns what Write
// returned, failing t if it has not returned within d: no test can hang
// on a Write that should not block.
func ccWrite(t *testing.T, c *coalescingConn, p []byte, d time.Duration) (int, error) {
	t.Helper()
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		n, err := c.Write(p)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-time.After(d):
		c.Close() // wakes it, so that it does not outlive the test
		t.Fatalf("Write(%d bytes) did not return within %v", len(p), d)
		return 0, nil
	}
}

// ccStreamWriter writes the pattern stream to a coalescingConn in chunks
// from one goroutine, until a Write fails, max chunks are written or stop
// is closed.
type ccStreamWriter struct {
	c        *coalescingConn
	chunk    int
	accepted atomic.Int64 // bytes Write accepted
	maxPend  atomic.Int64 // the most pending seen after a Write returned
	stop     chan struct{}
	done     chan struct{}
	// Once done:
	err           error // the failed Write's error
	failedAt      time.Time
	drainingAtErr bool // whether the socket was still being written when Write failed
}

func ccStartWriter(c *coalescingConn, chunk, max int, before func()) *ccStreamWriter {
	w := &ccStreamWriter{c: c, chunk: chunk, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var off int64
		for i := 0; i < max; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if before != nil {
				before()
			}
			n, err := c.Write(ccPattern(off, chunk))
			p, draining, _ := ccState(c)
			off += int64(n)
			w.accepted.Store(off)
			if int64(p) > w.maxPend.Load() {
				w.maxPend.Store(int64(p))
			}
			if err != nil {
				w.err, w.failedAt, w.drainingAtErr = err, time.Now(), draining
				return
			}
			if n != chunk {
				w.err = errors.New("short write without an error")
				return
			}
		}
	}()
	return w
}

// mustBlock fails t unless the writer, whose peer reads nothing, is held
// on the limit within 20 s.
func (w *ccStreamWriter) mustBlock(t *testing.T) {
	t.Helper()
	if w.waitBlocked(20 * time.Second) {
		return
	}
	select {
	case <-w.done:
		t.Fatalf("the writer ended (%d bytes accepted, err %v) against a peer that reads nothing", w.accepted.Load(), w.err)
	default:
	}
	t.Fatalf("the writer did not block on the limit within 20s (%d bytes accepted)", w.accepted.Load())
}

// waitBlocked waits (up to d) until the writer is held: the count accepted
// has not moved for a while and, for chunks within the limit, the pending
// bytes leave no room for the next one (a larger chunk is held in its
// own write, with nothing pending).
func (w *ccStreamWriter) waitBlocked(d time.Duration) bool {
	deadline := time.Now().Add(d)
	last, since := w.accepted.Load(), time.Now()
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			return false
		case <-time.After(20 * time.Millisecond):
		}
		if a := w.accepted.Load(); a != last {
			last, since = a, time.Now()
			continue
		}
		p, draining, _ := ccState(w.c)
		held := p > 0 && p+w.chunk > coalesceLimit
		if w.chunk > coalesceLimit {
			held = draining
		}
		if time.Since(since) > 300*time.Millisecond && held {
			return true
		}
	}
	return false
}

// ccPeerGetsPrefix reads what the kernel holds for peer until the server's
// close, and checks that it is a prefix of the ccPattern stream.
func ccPeerGetsPrefix(t *testing.T, peer *net.TCPConn) []byte {
	t.Helper()
	peer.SetReadBuffer(1 << 20)
	r := ccStartReader(peer, 20*time.Second)
	if !r.wait(25 * time.Second) {
		t.Fatal("peer did not see the close within 25s")
	}
	if !ccClosedByServer(r.err) {
		t.Errorf("peer's read ended with %v", r.err)
	}
	got := r.bytes()
	if want := ccPattern(0, len(got)); !bytes.Equal(got, want) {
		t.Fatalf("peer got %d bytes that differ from the stream at byte %d", len(got), ccFirstDiff(got, want))
	}
	return got
}

// ccFailureSettles checks what follows a failed write on c: the socket
// closes, the Read blocked on it (reporting to readDone) returns an error,
// and the drain ends.
func ccFailureSettles(t *testing.T, c *coalescingConn, srv *net.TCPConn, readDone <-chan error) {
	t.Helper()
	if !waitFor(5*time.Second, func() bool { return ccSocketClosed(srv) }) {
		t.Error("socket still open 5s after the write failed")
	}
	select {
	case err := <-readDone:
		if err == nil {
			t.Error("the blocked Read returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Error("the blocked Read did not return within 5s of the write failure")
	}
	if !waitFor(5*time.Second, func() bool { return !ccDraining(c) }) {
		t.Error("drain goroutine still running 5s after the write failure")
	}
}

// TestCoalescingConnKeepsOrder: many Writes of varied sizes, small ones
// gathered and ones larger than coalesceLimit, reach the peer exactly as
// written, from one writer (as net/http's HTTP/2 server writes) and from
// several taking turns under a mutex. Pending never holds more than the
// limit (or one Write larger than it). Afterwards the idle connection
// holds no buffer, and Close ends it with an EOF and no goroutine left.
func TestCoalescingConnKeepsOrder(t *testing.T) {
	// size draws a Write's size: mostly frame-sized, some up to the
	// limit, some beyond it, a few far beyond.
	size := func(r *rand.Rand) int {
		switch p := r.IntN(100); {
		case p < 60:
			return 1 + r.IntN(300)
		case p < 80:
			return 1 + r.IntN(coalesceLimit)
		case p < 95:
			return coalesceLimit + 1 + r.IntN(3*coalesceLimit)
		default:
			return coalesceLimit + 1 + r.IntN(256<<10)
		}
	}

	for _, tc := range []struct {
		name      string
		writers   int
		writeIdle time.Duration
	}{
		{"one writer", 1, 0},
		{"one writer with writeIdle", 1, 10 * time.Second},
		{"four writers under a mutex", 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer ccNoLeaks(t)()
			srv, peer := ccPair(t, 0, 0)
			c := ccNew(srv, tc.writeIdle)
			r := ccStartReader(peer, 60*time.Second)

			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			var (
				mu       sync.Mutex
				expected bytes.Buffer
				writeErr atomic.Value
				wg       sync.WaitGroup
				maxPend  atomic.Int64
				largest  int
			)
			const writes = 1500
			per := writes / tc.writers
			for w := 0; w < tc.writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(w)))
					for i := 0; i < per; i++ {
						n := size(rng)
						// Writers draw from disjoint parts of the stream.
						p := ccPattern(int64(w)<<40+int64(i)<<20, n)
						mu.Lock()
						largest = max(largest, n)
						got, err := c.Write(p)
						if err == nil && got == n {
							expected.Write(p)
						}
						if pend, _, _ := ccState(c); int64(pend) > maxPend.Load() {
							maxPend.Store(int64(pend))
						}
						mu.Unlock()
						if err != nil || got != n {
							writeErr.CompareAndSwap(nil, "Write("+itoa(int64(n))+") = "+itoa(int64(got))+", "+ccErrString(err))
							return
						}
						if rng.IntN(50) == 0 {
							runtime.Gosched() // let a drain catch up sometimes
						}
					}
				}()
			}
			allWritten := make(chan struct{})
			go func() { wg.Wait(); close(allWritten) }()
			select {
			case <-allWritten:
			case <-time.After(120 * time.Second):
				c.Close() // wakes the writers
				<-allWritten
				t.Fatalf("writers not done within 120s; peer got %d bytes", r.n.Load())
			}
			if err := writeErr.Load(); err != nil {
				t.Fatal(err)
			}
			total := int64(expected.Len())
			if !waitFor(60*time.Second, func() bool { return r.n.Load() >= total }) {
				t.Fatalf("peer got %d of %d bytes within 60s", r.n.Load(), total)
			}
			// Nothing more is pending: the drain ends, and gives its
			// buffer back.
			if !waitFor(5*time.Second, func() bool { return !ccDraining(c) }) {
				t.Fatal("drain goroutine still running 5s after everything was delivered")
			}
			if _, _, holds := ccState(c); holds {
				t.Error("idle connection still holds a pending buffer")
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if !r.wait(10 * time.Second) {
				t.Fatal("peer did not see the close within 10s")
			}
			if r.err != nil {
				t.Errorf("peer's read ended with %v, want EOF", r.err)
			}
			got := r.bytes()
			t.Logf("%d Writes, %d bytes (%.1f MiB), the largest %d; most pending seen %d",
				per*tc.writers, total, float64(total)/(1<<20), largest, maxPend.Load())
			if maxPend.Load() > int64(max(coalesceLimit, largest)) {
				t.Errorf("pending reached %d bytes: more than the limit (%d) and than any one Write", maxPend.Load(), coalesceLimit)
			}
			if !bytes.Equal(got, expected.Bytes()) {
				t.Fatalf("peer got %d bytes, want %d; first difference at byte %d", len(got), total, ccFirstDiff(got, expected.Bytes()))
			}
		})
	}
}

func ccErrString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestCoalescingConnLargeWrite: a Write larger than coalesceLimit is not
// gathered: once nothing is pending it goes out on the caller's goroutine
// and returns when written (the peer reads nothing, so it stays under way).
// Small Writes made meanwhile are accepted up to the limit and follow it;
// one past the limit waits. Once the peer reads, everything arrives in
// the order written.
func TestCoalescingConnLargeWrite(t *testing.T) {
	defer ccNoLeaks(t)()
	// The peer's receive buffer keeps its default size: one shrunk on
	// an open connection keeps its window small for good, and makes the
	// transfer at the end take many seconds. Its default (about 128 KiB,
	// which a peer that does not read never grows) and a small send
	// buffer still take far less than the large Write.
	srv, peer := ccPair(t, 4<<10, 0)
	c := ccNew(srv, 0)
	defer c.Close()
	const big = 4 << 20
	var off int64
	small := func(n int) {
		t.Helper()
		if got, err := ccWrite(t, c, ccPattern(off, n), 5*time.Second); err != nil || got != n {
			t.Fatalf("Write(%d) = %d, %v", n, got, err)
		}
		off += int64(n)
	}
	small(100)
	bigOff := off
	off += big
	bigDone := make(chan error, 1)
	go func() {
		n, err := c.Write(ccPattern(bigOff, big))
		if err == nil && n != big {
			err = errors.New("short write without an error")
		}
		bigDone <- err
	}()
	if !waitFor(5*time.Second, func() bool {
		return ccGoroutineWith(ccStacks(), "(*coalescingConn).Write(", "(*coalescingConn).writeBatch(")
	}) {
		t.Fatal("the large Write is not being written on its caller's goroutine after 5s")
	}
	select {
	case err := <-bigDone:
		t.Fatalf("the large Write returned (%v) while the peer read nothing", err)
	case <-time.After(300 * time.Millisecond):
	}
	small(200) // accepted while the large Write is under way
	if p, d, _ := ccState(c); p != 200 || !d {
		t.Errorf("pending %d bytes, socket busy %v, after a small Write during a large one; want 200, true", p, d)
	}
	lastOff := off
	off += coalesceLimit
	lastDone := make(chan error, 1)
	go func() {
		_, err := c.Write(ccPattern(lastOff, coalesceLimit))
		lastDone <- err
	}()
	select {
	case err := <-lastDone:
		t.Fatalf("a Write past the limit returned (%v) while the peer read nothing", err)
	case <-time.After(300 * time.Millisecond):
	}

	srv.SetWriteBuffer(1 << 20) // the peer reads now: no need to go 4 KiB at a time
	r := ccStartReader(peer, 30*time.Second)
	for _, x := range []struct {
		what string
		ch   chan error
	}{{"the large Write", bigDone}, {"the Write past the limit", lastDone}} {
		select {
		case err := <-x.ch:
			if err != nil {
				t.Fatalf("%s failed: %v", x.what, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not return within 20s of the peer reading", x.what)
		}
	}
	total := off
	if !waitFor(30*time.Second, func() bool { return r.n.Load() >= total }) {
		t.Fatalf("peer got %d of %d bytes within 30s", r.n.Load(), total)
	}
	if !waitFor(5*time.Second, func() bool { _, d, holds := ccState(c); return !d && !holds }) {
		t.Error("drain running, or a buffer held, 5s after everything was delivered")
	}
	c.Close()
	if !r.wait(10 * time.Second) {
		t.Fatal("peer did not see the close within 10s")
	}
	if got, want := r.bytes(), ccPattern(0, int(total)); !bytes.Equal(got, want) {
		t.Fatalf("peer got %d bytes, want %d; first difference at byte %d", len(got), len(want), ccFirstDiff(got, want))
	}
}

// TestCoalescingConnBoundsPending: against a peer that stops reading
// (writeIdle 0, so the connection may stall for ever), a writer's Writes
// soon block on the limit; pending never passes coalesceLimit, and the
// bytes accepted but never given to the kernel are at most that plus the
// batch being written. Close wakes the blocked Write with an error, and
// no goroutine is left.
func TestCoalescingConnBoundsPending(t *testing.T) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 4<<10, 4<<10)
	c := ccNew(srv, 0)
	const chunk = coalesceLimit / 3    // gathered, three to a batch
	const maxChunks = 16 << 20 / chunk // far more than the kernel and the limit hold
	w := ccStartWriter(c, chunk, maxChunks, nil)
	defer func() {
		close(w.stop)
		c.Close()
		<-w.done
	}()
	w.mustBlock(t)
	accepted := w.accepted.Load()
	if !ccDraining(c) {
		t.Error("the writer is blocked but no drain runs")
	}
	if w.maxPend.Load() > coalesceLimit {
		t.Errorf("pending reached %d bytes, limit %d", w.maxPend.Load(), coalesceLimit)
	}
	t.Logf("writer blocked after %d bytes accepted (%d chunks of %d); most pending %d", accepted, accepted/chunk, chunk, w.maxPend.Load())
	if accepted >= maxChunks*chunk {
		t.Fatalf("all %d bytes were accepted", accepted)
	}

	t0 := time.Now()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	closeTook := time.Since(t0)
	// The peer reads nothing, so the drain is stuck until closeFlushTimeout:
	// still running means Close did not wait for it.
	if !ccDraining(c) {
		t.Errorf("Close returned after %v with the drain already ended: it waited for the flush", closeTook)
	}
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked Write did not return within 5s of Close")
	}
	if w.err == nil {
		t.Fatal("the blocked Write returned no error after Close")
	}
	if !w.drainingAtErr {
		t.Errorf("the blocked Write returned (%v) only once the drain ended, not at Close", w.err)
	}
	t.Logf("blocked Write returned %v after Close", w.err)
	if !waitFor(closeFlushTimeout+5*time.Second, func() bool { return ccSocketClosed(srv) }) {
		t.Fatalf("socket still open %v after Close", closeFlushTimeout+5*time.Second)
	}
	// Everything the kernel holds arrives, in order; what was accepted
	// and never given to it is at most pending plus one batch.
	got := ccPeerGetsPrefix(t, peer)
	lost := w.accepted.Load() - int64(len(got))
	t.Logf("peer got %d bytes; %d accepted and never written", len(got), lost)
	if lost < 0 {
		t.Errorf("peer got %d bytes, more than the %d accepted", len(got), w.accepted.Load())
	}
	if lost > 2*coalesceLimit {
		t.Errorf("%d bytes were accepted and never written: more than pending plus one batch (%d)", lost, 2*coalesceLimit)
	}
}

// TestCoalescingConnWriteIdle: with writeIdle set, a peer that stops
// reading fails the connection: a Write returns a timeout error (and every
// later one the same), the socket is closed so a blocked Read returns too,
// and the drain goroutine ends; net/http's lifting of the write deadline
// around its Writes changes none of that. A peer that reads slowly but
// steadily is never cut off, however long the whole transfer takes.
func TestCoalescingConnWriteIdle(t *testing.T) {
	const writeIdle = 300 * time.Millisecond
	chunks := []struct {
		name string
		size int
	}{
		{"gathered Writes", coalesceLimit / 3},
		{"Writes larger than the limit", 4 * coalesceLimit},
	}
	for _, ch := range chunks {
		t.Run("stalled peer, "+ch.name, func(t *testing.T) {
			ccWriteIdleStalled(t, writeIdle, ch.size)
		})
	}
	// A longer writeIdle here: the test is about the whole transfer
	// outlasting it, and TCP makes room for a slow reader in steps up to
	// a quarter second apart, too close to 300 ms for a busy machine.
	for _, ch := range chunks {
		t.Run("slow steady reader, "+ch.name, func(t *testing.T) {
			ccWriteIdleSlowReader(t, time.Second, ch.size)
		})
	}
}

func ccWriteIdleStalled(t *testing.T, writeIdle time.Duration, chunk int) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 4<<10, 4<<10)
	c := ccNew(srv, writeIdle)
	readDone := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readDone <- err
	}()
	// net/http's HTTP/2 server lifts the write deadline after each
	// of its writes; the drain's own must hold regardless.
	lift := func() {
		c.SetWriteDeadline(time.Time{})
		c.SetDeadline(time.Time{})
	}
	t0 := time.Now()
	w := ccStartWriter(c, chunk, 32<<20/chunk, lift) // 32 MiB at most
	defer func() {
		close(w.stop)
		c.Close()
		<-w.done
	}()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("Writes still succeeding 15s after the peer stopped reading (writeIdle %v, %d bytes accepted)", writeIdle, w.accepted.Load())
	}
	if w.err == nil {
		t.Fatalf("the writer wrote all %d bytes to a peer that reads nothing", w.accepted.Load())
	}
	t.Logf("Write failed after %v, %d bytes accepted: %v", w.failedAt.Sub(t0).Round(time.Millisecond), w.accepted.Load(), w.err)
	if !isTimeout(w.err) {
		t.Errorf("Write failed with %v, want a timeout", w.err)
	}
	if _, err := c.Write([]byte("again")); err == nil || err.Error() != w.err.Error() {
		t.Errorf("the Write after the failure returned %v, want %v again", err, w.err)
	}
	ccFailureSettles(t, c, srv, readDone)
	// The peer reads what the kernel held, then the close.
	got := ccPeerGetsPrefix(t, peer)
	if lost := w.accepted.Load() - int64(len(got)); lost < 0 || lost > 2*coalesceLimit {
		t.Errorf("%d bytes accepted, %d delivered", w.accepted.Load(), len(got))
	}
}

func ccWriteIdleSlowReader(t *testing.T, writeIdle time.Duration, chunk int) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 16<<10, 0)
	c := ccNew(srv, writeIdle)
	total := (1 << 20) / chunk * chunk
	// The peer takes at most 8 KiB every 20 ms: 1 MiB takes 2.5 s or
	// more, over twice writeIdle, but it never stops for long. (The
	// sender still waits up to a quarter second for room at times: TCP
	// opens a slow reader's window in steps, on its own timers; a
	// smaller receive buffer makes those waits longer, not shorter.)
	readDone := make(chan error, 1)
	var got bytes.Buffer
	var maxWait time.Duration // the longest a read waited for bytes
	go func() {
		peer.SetReadDeadline(time.Now().Add(60 * time.Second))
		b := make([]byte, 8<<10)
		for got.Len() < total {
			t1 := time.Now()
			n, err := peer.Read(b)
			maxWait = max(maxWait, time.Since(t1))
			got.Write(b[:n])
			if err != nil {
				readDone <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		readDone <- nil
	}()
	t0 := time.Now()
	var writeErr error
	var slowest time.Duration
	for off := 0; off < total && writeErr == nil; off += chunk {
		t1 := time.Now()
		_, writeErr = c.Write(ccPattern(int64(off), chunk))
		slowest = max(slowest, time.Since(t1))
	}
	writing := time.Since(t0)
	var readErr error
	select {
	case readErr = <-readDone:
	case <-time.After(90 * time.Second):
		t.Fatal("slow reader did not finish within 90s")
	}
	took := time.Since(t0)
	t.Logf("writes took %v (slowest %v), the transfer %v (writeIdle %v); a read waited at most %v for bytes",
		writing.Round(time.Millisecond), slowest.Round(time.Millisecond), took.Round(time.Millisecond), writeIdle, maxWait.Round(time.Millisecond))
	if writeErr != nil {
		t.Fatalf("a slow but steady reader was cut off: %v", writeErr)
	}
	if readErr != nil {
		t.Fatalf("peer's read failed: %v", readErr)
	}
	if want := ccPattern(0, total); !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("peer got %d bytes, want %d; first difference at byte %d", got.Len(), total, ccFirstDiff(got.Bytes(), want))
	}
	if took < 2*writeIdle {
		t.Errorf("the transfer took only %v: the test did not outlast writeIdle", took)
	}
	c.Close()
}

// TestCoalescingConnCloseFlushes: bytes written just before Close still
// reach the peer, followed by EOF, whether the peer is reading at the time
// or only starts after the close.
func TestCoalescingConnCloseFlushes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		readLater bool
		writeIdle time.Duration
	}{
		// Larger than the kernel's buffers at their defaults? No
		// matter: the peer drains as the close flush writes.
		{"peer reading", 256 << 10, false, 0},
		{"peer reading, writeIdle set", 256 << 10, false, 5 * time.Second},
		// Small enough for the kernel to hold: the peer reads after
		// the socket is closed.
		{"peer reads after the close", 16 << 10, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer ccNoLeaks(t)()
			srv, peer := ccPair(t, 0, 0)
			c := ccNew(srv, tc.writeIdle)
			var r *ccPeerReader
			if !tc.readLater {
				r = ccStartReader(peer, 30*time.Second)
			}
			var off int64
			for _, n := range []int{9, 100, 4 << 10, tc.size / 2, 13, tc.size - (4 << 10) - 122 - tc.size/2} {
				if _, err := ccWrite(t, c, ccPattern(off, n), 10*time.Second); err != nil {
					t.Fatalf("Write: %v", err)
				}
				off += int64(n)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if tc.readLater {
				if !waitFor(closeFlushTimeout+5*time.Second, func() bool { return ccSocketClosed(srv) }) {
					t.Fatal("socket still open after the flush bound")
				}
				r = ccStartReader(peer, 30*time.Second)
			}
			if !r.wait(30 * time.Second) {
				t.Fatal("peer did not see the close within 30s")
			}
			if r.err != nil {
				t.Errorf("peer's read ended with %v, want EOF", r.err)
			}
			if got, want := r.bytes(), ccPattern(0, int(off)); !bytes.Equal(got, want) {
				t.Fatalf("peer got %d bytes, want %d; first difference at byte %d", len(got), len(want), ccFirstDiff(got, want))
			}
			if !waitFor(5*time.Second, func() bool { return ccSocketClosed(srv) && !ccDraining(c) }) {
				t.Error("socket open or drain running 5s after the peer saw EOF")
			}
		})
	}
}

// TestCoalescingConnCloseBoundedWhenPeerStalls: with writes under way
// and a peer that never reads (writeIdle 0: nothing else bounds them),
// Close returns at once, wakes a Write blocked on the limit and a blocked
// Read at once, and the socket is closed within about closeFlushTimeout,
// ending a large Write in progress with an error; no goroutine is left.
func TestCoalescingConnCloseBoundedWhenPeerStalls(t *testing.T) {
	type result struct {
		err      error
		draining bool // whether the socket was still being written when the call returned
	}
	// blockedRead starts a Read that the peer never answers.
	blockedRead := func(c *coalescingConn) chan result {
		ch := make(chan result, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			ch <- result{err, ccDraining(c)}
		}()
		return ch
	}
	// closeAtOnce closes c and checks that Close did not wait for the
	// writes under way, which the peer holds until closeFlushTimeout.
	closeAtOnce := func(t *testing.T, c *coalescingConn) time.Time {
		t.Helper()
		t0 := time.Now()
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if !ccDraining(c) {
			t.Errorf("Close returned after %v with the writes already ended: it waited for them", time.Since(t0))
		}
		return t0
	}
	checkRead := func(t *testing.T, ch chan result) {
		t.Helper()
		select {
		case r := <-ch:
			if r.err == nil {
				t.Error("the blocked Read returned no error after Close")
			}
			if !r.draining {
				t.Errorf("the blocked Read returned (%v) only once the socket closed, not at Close", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Error("the blocked Read did not return within 5s of Close")
		}
	}
	// closedAfter waits for the socket to close, then checks that the
	// peer gets a prefix of the stream and the close.
	closedAfter := func(t *testing.T, c *coalescingConn, srv, peer *net.TCPConn, t0 time.Time) {
		t.Helper()
		if !waitFor(closeFlushTimeout+5*time.Second, func() bool { return ccSocketClosed(srv) }) {
			t.Fatalf("socket still open %v after Close", closeFlushTimeout+5*time.Second)
		}
		t.Logf("socket closed %v after Close (closeFlushTimeout %v)", time.Since(t0).Round(time.Millisecond), closeFlushTimeout)
		if !waitFor(5*time.Second, func() bool { return !ccDraining(c) }) {
			t.Error("writes still under way after the socket closed")
		}
		ccPeerGetsPrefix(t, peer)
	}

	t.Run("gathered Writes pending", func(t *testing.T) {
		defer ccNoLeaks(t)()
		srv, peer := ccPair(t, 4<<10, 4<<10)
		c := ccNew(srv, 0)
		w := ccStartWriter(c, coalesceLimit/3, 16<<20/(coalesceLimit/3), nil)
		defer func() {
			close(w.stop)
			c.Close()
			<-w.done
		}()
		w.mustBlock(t)
		rd := blockedRead(c)
		select {
		case r := <-rd:
			t.Fatalf("Read returned (%v) before Close", r.err)
		case <-time.After(100 * time.Millisecond):
		}
		t0 := closeAtOnce(t, c)
		select {
		case <-w.done:
			if w.err == nil {
				t.Error("the Write blocked on the limit returned no error after Close")
			}
			if !w.drainingAtErr {
				t.Errorf("the Write blocked on the limit returned (%v) only once the drain ended, not at Close", w.err)
			}
			t.Logf("the Write blocked on the limit returned %v", w.err)
		case <-time.After(5 * time.Second):
			t.Error("the Write blocked on the limit did not return within 5s of Close")
		}
		checkRead(t, rd)
		closedAfter(t, c, srv, peer, t0)
	})

	t.Run("a large Write under way", func(t *testing.T) {
		defer ccNoLeaks(t)()
		srv, peer := ccPair(t, 4<<10, 4<<10)
		c := ccNew(srv, 0)
		defer c.Close()
		const big = 1 << 20
		bigDone := make(chan error, 1)
		go func() {
			_, err := c.Write(ccPattern(0, big))
			bigDone <- err
		}()
		if !waitFor(5*time.Second, func() bool {
			return ccGoroutineWith(ccStacks(), "(*coalescingConn).Write(", "(*coalescingConn).writeBatch(")
		}) {
			t.Fatal("the large Write is not under way after 5s")
		}
		// A small Write meanwhile is accepted, to be written after it.
		if _, err := ccWrite(t, c, ccPattern(big, 100), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		rd := blockedRead(c)
		select {
		case err := <-bigDone:
			t.Fatalf("the large Write returned (%v) while the peer read nothing", err)
		case r := <-rd:
			t.Fatalf("Read returned (%v) before Close", r.err)
		case <-time.After(100 * time.Millisecond):
		}
		t0 := closeAtOnce(t, c)
		checkRead(t, rd)
		select {
		case err := <-bigDone:
			if err == nil {
				t.Error("the large Write, cut short by Close, returned no error")
			}
			t.Logf("the large Write returned %v after %v", err, time.Since(t0).Round(time.Millisecond))
		case <-time.After(closeFlushTimeout + 5*time.Second):
			t.Fatalf("the large Write did not return within %v of Close", closeFlushTimeout+5*time.Second)
		}
		closedAfter(t, c, srv, peer, t0)
	})
}

// TestCoalescingConnCloseWhileWriting: Close lands at a random moment
// among Writes of every size from several writers (taking turns under a
// mutex, as net/http's frame writes do), with the peer reading. Every
// writer then ends with an error, and the peer gets, in order and without
// a gap or a repeat, a prefix of the bytes the Writes accepted (all of
// them, normally: the flush has a second), then the close. Twenty rounds,
// with and without writeIdle; no goroutine is left.
func TestCoalescingConnCloseWhileWriting(t *testing.T) {
	defer ccNoLeaks(t)()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	complete := 0
	const rounds = 20
	for round := 0; round < rounds; round++ {
		writeIdle := time.Duration(0)
		if round%2 == 1 {
			writeIdle = 5 * time.Second
		}
		srv, peer := ccPair(t, 0, 0)
		c := ccNew(srv, writeIdle)
		r := ccStartReader(peer, 30*time.Second)
		var (
			mu       sync.Mutex
			expected bytes.Buffer
			wg       sync.WaitGroup
			errs     [4]error
		)
		for w := range errs {
			wrng := rand.New(rand.NewPCG(seed, uint64(round*len(errs)+w+1)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5000; i++ {
					n := 1 + wrng.IntN(300)
					if wrng.IntN(10) == 0 {
						n = 1 + wrng.IntN(8*coalesceLimit)
					}
					p := ccPattern(int64(round)<<44+int64(w)<<40+int64(i)<<20, n)
					mu.Lock()
					got, err := c.Write(p)
					expected.Write(p[:got])
					mu.Unlock()
					if err != nil {
						errs[w] = err
						return
					}
				}
				errs[w] = errors.New("all 5000 Writes succeeded after Close")
			}()
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if err := c.Close(); err != nil {
			t.Errorf("round %d: Close: %v", round, err)
		}
		writersDone := make(chan struct{})
		go func() { wg.Wait(); close(writersDone) }()
		select {
		case <-writersDone:
		case <-time.After(closeFlushTimeout + 10*time.Second):
			t.Fatalf("round %d: writers still writing %v after Close", round, closeFlushTimeout+10*time.Second)
		}
		for w, err := range errs {
			if err == nil || err.Error() == "all 5000 Writes succeeded after Close" {
				t.Errorf("round %d: writer %d ended with %v", round, w, err)
			}
		}
		if !r.wait(20 * time.Second) {
			t.Fatalf("round %d: peer did not see the close within 20s", round)
		}
		if !ccClosedByServer(r.err) {
			t.Errorf("round %d: peer's read ended with %v", round, r.err)
		}
		got, want := r.bytes(), expected.Bytes()
		if len(got) > len(want) || !bytes.Equal(got, want[:len(got)]) {
			t.Fatalf("round %d: peer got %d bytes, accepted %d; they differ at byte %d", round, len(got), len(want), ccFirstDiff(got, want))
		}
		if len(got) == len(want) {
			complete++
		}
		if !waitFor(5*time.Second, func() bool { return ccSocketClosed(srv) && !ccDraining(c) }) {
			t.Errorf("round %d: socket open or writes under way 5s after the peer saw the close", round)
		}
	}
	t.Logf("%d of %d rounds delivered every byte accepted before Close", complete, rounds)
}

// TestCoalescingConnCloseSemantics: Close with nothing pending closes the
// socket at once; Write after Close returns net.ErrClosed, and so does a
// second Close.
func TestCoalescingConnCloseSemantics(t *testing.T) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 0, 0)
	c := ccNew(srv, 0)
	r := ccStartReader(peer, 20*time.Second)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return r.n.Load() == 5 && !ccDraining(c) }) {
		t.Fatal("the write was not delivered, or the drain did not end, within 10s")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !ccSocketClosed(srv) {
		t.Error("Close with nothing pending left the socket open")
	}
	if n, err := c.Write([]byte("more")); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %d, %v; want 0, net.ErrClosed", n, err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if !r.wait(10 * time.Second) {
		t.Fatal("peer did not see the close within 10s")
	}
	if r.err != nil || string(r.bytes()) != "hello" {
		t.Errorf("peer got %q, %v; want \"hello\", EOF", r.bytes(), r.err)
	}
}

// TestCoalescingConnWriteAfterPeerGone: the peer resets the connection;
// gathered Writes go on being accepted until the drain's write fails (a
// large Write fails itself), then every Write returns that failure; the
// socket is closed, a blocked Read returns, and no goroutine is left.
func TestCoalescingConnWriteAfterPeerGone(t *testing.T) {
	for _, chunk := range []int{1 << 10, 4 * coalesceLimit} {
		t.Run(itoa(int64(chunk))+" byte Writes", func(t *testing.T) { ccWriteAfterPeerGone(t, chunk) })
	}
}

func ccWriteAfterPeerGone(t *testing.T, chunk int) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 0, 0)
	c := ccNew(srv, 0)
	readDone := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readDone <- err
	}()
	peer.SetLinger(0)
	peer.Close() // RST
	var err error
	deadline := time.Now().Add(10 * time.Second)
	writes := 0
	for ; writes < 10000 && time.Now().Before(deadline); writes++ {
		if _, err = c.Write(ccPattern(int64(writes*chunk), chunk)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatalf("%d Writes to a reset connection all succeeded", writes)
	}
	t.Logf("Write %d failed: %v", writes+1, err)
	for i := 0; i < 3; i++ {
		if _, err2 := c.Write([]byte("x")); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("Write after the failure returned %v, want %v again", err2, err)
		}
	}
	ccFailureSettles(t, c, srv, readDone)
	c.Close()
}

// TestCoalescingConnDeadlinesIgnored: a write deadline set by the caller
// is ignored (the drain owns it), and SetDeadline moves only the read
// deadline.
func TestCoalescingConnDeadlinesIgnored(t *testing.T) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 0, 0)
	c := ccNew(srv, 0)
	r := ccStartReader(peer, 20*time.Second)
	past := time.Now().Add(-time.Second)
	if err := c.SetWriteDeadline(past); err != nil {
		t.Errorf("SetWriteDeadline = %v, want nil", err)
	}
	if _, err := c.Write([]byte("one ")); err != nil {
		t.Errorf("Write after SetWriteDeadline(past): %v", err)
	}
	if !waitFor(10*time.Second, func() bool { return r.n.Load() == 4 }) {
		t.Fatal("Write after SetWriteDeadline(past) was not delivered within 10s")
	}
	if err := c.SetDeadline(past); err != nil {
		t.Errorf("SetDeadline = %v, want nil", err)
	}
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("Read after SetDeadline(past) = %v, want a timeout", err)
	}
	if _, err := c.Write([]byte("two")); err != nil {
		t.Errorf("Write after SetDeadline(past): %v", err)
	}
	if !waitFor(10*time.Second, func() bool { return r.n.Load() == 7 }) {
		t.Fatal("Write after SetDeadline(past) was not delivered within 10s")
	}
	c.SetReadDeadline(time.Time{})
	c.Close()
	if !r.wait(10 * time.Second) {
		t.Fatal("peer did not see the close within 10s")
	}
	if string(r.bytes()) != "one two" || r.err != nil {
		t.Errorf("peer got %q, %v; want \"one two\", EOF", r.bytes(), r.err)
	}
}

// TestCoalescingConnOffPassesThrough: switched off (a TLS connection until
// it negotiates h2), every method is the socket's own: Write writes before
// it returns, deadlines apply, Close closes.
func TestCoalescingConnOffPassesThrough(t *testing.T) {
	defer ccNoLeaks(t)()
	srv, peer := ccPair(t, 0, 0)
	c := newCoalescingConn(srv, time.Second, false)
	r := ccStartReader(peer, 20*time.Second)
	if _, err := c.Write([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	if p, d, holds := ccState(c); p != 0 || d || holds {
		t.Errorf("off: a Write left pending %d, draining %v, buffer held %v", p, d, holds)
	}
	if err := c.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("late")); !isTimeout(err) {
		t.Errorf("off: Write past the write deadline = %v, want a timeout", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !ccSocketClosed(srv) {
		t.Error("off: Close left the socket open")
	}
	if !r.wait(10 * time.Second) {
		t.Fatal("peer did not see the close within 10s")
	}
	if string(r.bytes()) != "direct" {
		t.Errorf("peer got %q, want \"direct\"", r.bytes())
	}
}

// ccStacks is every goroutine's stack.
func ccStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// ccGoroutineWith reports whether one goroutine's stack in stacks (from
// ccStacks) holds every one of frames.
func ccGoroutineWith(stacks string, frames ...string) bool {
	for _, g := range strings.Split(stacks, "\n\n") {
		all := true
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}

// ccStalledH2Request opens an HTTP/2 connection on c (after the TLS
// handshake, if any), opens every flow-control window and asks for path,
// then reads nothing: the server's writes back up into its socket.
func ccStalledH2Request(t *testing.T, c net.Conn, authority, path string) {
	t.Helper()
	bw := bufio.NewWriter(c)
	fr := http2.NewFramer(bw, c)
	io.WriteString(bw, http2.ClientPreface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	fr.WriteWindowUpdate(0, 1<<31-1-65535)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteSettingsAck() // the server's SETTINGS are not read: nothing is
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestCoalescingConnEndToEnd: HTTP/2 through the real server (Serve +
// proxy.New), h2c with prior knowledge and h2 over TLS: 8 connections
// with 50 concurrent streams each, small answers, uploads answered with
// their length and 1 MiB downloads, all complete and correct. A client
// that stops reading shows the server's writes held in a coalescingConn
// that is switched on (h2c: the fast loop's hand-off; TLS: ALPN h2), while
// an HTTP/1.1 client over TLS leaves its connection switched off. (No
// test hook exposes the server's connection: the goroutine stacks do.)
func TestCoalescingConnEndToEnd(t *testing.T) {
	cert, key, _ := selfSigned(t)
	smallBuffers := func(c *net.TCPConn) { c.SetWriteBuffer(32 << 10) }
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c", false}, {"h2 over TLS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{}
			scheme := "http"
			if tc.tls {
				o.TLSCert, o.TLSKey = cert, key
				scheme = "https"
			}
			s := startStack(t, o, smallBuffers)
			base := scheme + "://" + s.addr

			const conns, streams, workers = 8, 50, 10
			var wg sync.WaitGroup
			var failures atomic.Int64
			var firstErr atomic.Value
			fail := func(msg string) {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, msg)
			}
			var bigs, uploads, oks atomic.Int64
			t0 := time.Now()
			for ci := 0; ci < conns; ci++ {
				tr := &http.Transport{Protocols: new(http.Protocols)}
				if tc.tls {
					tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
					tr.Protocols.SetHTTP2(true)
				} else {
					tr.Protocols.SetUnencryptedHTTP2(true)
				}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
				for wi := 0; wi < workers; wi++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := wi; k < streams; k += workers {
							id := "conn " + itoa(int64(ci)) + " stream " + itoa(int64(k))
							var req *http.Request
							var want func([]byte) bool
							switch {
							case k%25 == 7: // 2 per connection
								req, _ = http.NewRequest("GET", base+"/big?mib=1", nil)
								want = func(b []byte) bool {
									return len(b) == 1<<20 && bytes.Count(b, []byte("x")) == len(b)
								}
								bigs.Add(1)
							case k%3 == 0:
								n := 1 + (ci*7919+k*997)%(40<<10)
								req, _ = http.NewRequest("POST", base+"/upload", bytes.NewReader(ccPattern(int64(k), n)))
								want = func(b []byte) bool { return string(b) == itoa(int64(n)) }
								uploads.Add(1)
							default:
								req, _ = http.NewRequest("GET", base+"/ok", nil)
								want = func(b []byte) bool { return string(b) == "ok" }
								oks.Add(1)
							}
							res, err := client.Do(req)
							if err != nil {
								fail(id + ": " + err.Error())
								continue
							}
							body, err := io.ReadAll(res.Body)
							res.Body.Close()
							switch {
							case err != nil:
								fail(id + " " + req.URL.Path + ": reading the body: " + err.Error())
							case res.ProtoMajor != 2:
								fail(id + ": answered over " + res.Proto)
							case res.StatusCode != 200:
								fail(id + " " + req.URL.Path + ": " + res.Status)
							case !want(body):
								fail(id + " " + req.URL.Path + ": wrong body of " + itoa(int64(len(body))) + " bytes")
							}
						}
					}()
				}
			}
			wg.Wait()
			t.Logf("%d connections x %d streams (%d /ok, %d /upload, %d /big of 1 MiB) in %v",
				conns, streams, oks.Load(), uploads.Load(), bigs.Load(), time.Since(t0).Round(time.Millisecond))
			// The backend reports every /big on a channel of 16: take
			// those reports, so that the one below finds room.
			for i := int64(0); i < bigs.Load(); i++ {
				select {
				case <-s.back.bigDone:
				case <-time.After(10 * time.Second):
					t.Fatalf("the backend reported %d of %d /big requests done", i, bigs.Load())
				}
			}
			if n := failures.Load(); n > 0 {
				t.Fatalf("%d of %d requests failed; first: %v", n, conns*streams, firstErr.Load())
			}

			if !tc.tls && forceStdHTTP1 {
				t.Log("SLUICE_TEST_STDSERVER=1: h2c is net/http's own, not handed off; not looking for a coalescingConn")
				return
			}
			raw, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() }) // before the stack's cleanup
			raw.(*net.TCPConn).SetReadBuffer(16 << 10)
			var c net.Conn = raw
			if tc.tls {
				tlc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
				tlc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tlc.Handshake(); err != nil {
					t.Fatal(err)
				}
				if p := tlc.ConnectionState().NegotiatedProtocol; p != "h2" {
					t.Fatalf("negotiated %q, want h2", p)
				}
				tlc.SetDeadline(time.Time{})
				c = tlc
			}
			ccStalledH2Request(t, c, s.addr, "/big?mib=4")
			if !waitFor(10*time.Second, func() bool {
				return strings.Contains(ccStacks(), "(*coalescingConn).writeBatch")
			}) {
				t.Error("no write held in a coalescingConn for a client that stopped reading: the connection is not one, or is switched off")
			}
			raw.Close()
		})
	}

	t.Run("HTTP/1.1 over TLS stays off", func(t *testing.T) {
		o := Options{TLSCert: cert, TLSKey: key}
		s := startStack(t, o, smallBuffers)
		// Writes to the connections above end within the flush bound.
		if !waitFor(10*time.Second, func() bool { return !strings.Contains(ccStacks(), "(*coalescingConn).writeBatch") }) {
			t.Fatal("writes to earlier connections still under way after 10s")
		}
		raw, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		raw.(*net.TCPConn).SetReadBuffer(16 << 10)
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "GET /big?mib=4 HTTP/1.1\r\nHost: sluice\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// The response's write blocks in the coalescingConn's Write,
		// passed straight through to the socket.
		var stacks string
		if !waitFor(10*time.Second, func() bool {
			stacks = ccStacks()
			return ccGoroutineWith(stacks, "(*coalescingConn).Write(", "sockio.(*Conn).Write(")
		}) {
			t.Fatal("no write blocked in a coalescingConn: TLS connections are not wrapped")
		}
		if strings.Contains(stacks, "(*coalescingConn).writeBatch") || strings.Contains(stacks, "(*coalescingConn).drain") {
			t.Error("an HTTP/1.1 connection over TLS is written as a coalescing one")
		}
		raw.Close()
	})
}
