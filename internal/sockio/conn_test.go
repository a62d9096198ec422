//go:build linux

package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a wrapped connection and its plain peer, over loopback.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln := Listener(mustListen(t))
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	peer, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	c, ok := nc.(*Conn)
	if !ok {
		t.Fatalf("Listener accepted a %T, want *sockio.Conn", nc)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func TestWrapOnlyTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
	pair(t) // fails unless the listener's TCP connection comes back wrapped
}

// Large transfers in both directions, with the reading side slow enough
// that the writer meets a full socket buffer (EAGAIN, then a wait in the
// poller) and the reader an empty one, many times over.
func TestTransfersArriveWhole(t *testing.T) {
	const size = 8 << 20
	want := pattern(size)
	c, peer := pair(t)
	for _, dir := range []string{"wrapped writes", "wrapped reads"} {
		t.Run(dir, func(t *testing.T) {
			var w io.Writer = c
			var r io.Reader = peer
			if dir == "wrapped reads" {
				w, r = peer, c
			}
			errc := make(chan error, 1)
			go func() {
				n, err := w.Write(want)
				if err == nil && n != size {
					err = io.ErrShortWrite
				}
				errc <- err
			}()
			got := make([]byte, 0, size)
			buf := make([]byte, 100<<10)
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; len(got) < size && time.Now().Before(deadline); i++ {
				n, err := r.Read(buf[:1+i%len(buf)])
				if err != nil {
					t.Fatalf("read after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
				if i%64 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), size)
			}
		})
	}
}

func TestZeroLength(t *testing.T) {
	c, _ := pair(t)
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	c.Close()
	if _, err := c.Read(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read(nil) on a closed connection = %v, want net.ErrClosed", err)
	}
}

// The errors must be what net.TCPConn returns: plain io.EOF, and
// *net.OpError "read"/"write" wrapping what errors.Is looks for.
func TestReadEOF(t *testing.T) {
	c, peer := pair(t)
	peer.Write([]byte("x"))
	peer.Close()
	buf := make([]byte, 8)
	if n, err := c.Read(buf); n != 1 || err != nil {
		t.Fatalf("first read = %d, %v", n, err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read at EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func checkOpError(t *testing.T, err error, op string, target error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op {
		t.Fatalf("error %v (%T) is not a *net.OpError with Op %q", err, err, op)
	}
	if !errors.Is(err, target) {
		t.Fatalf("error %v: errors.Is(%v) is false", err, target)
	}
}

func TestReadDeadline(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if n != 0 {
		t.Fatalf("read %d bytes from a silent peer", n)
	}
	checkOpError(t, err, "read", os.ErrDeadlineExceeded)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("error %v does not report Timeout()", err)
	}
	// Cleared, the connection reads again.
	c.SetReadDeadline(time.Time{})
	peer.Write([]byte("ok"))
	if n, err := c.Read(buf); n != 2 || err != nil {
		t.Fatalf("read after clearing the deadline = %d, %v", n, err)
	}
}

func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t) // the peer never reads
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	big := make([]byte, 64<<20)
	n, err := c.Write(big)
	if n >= len(big) {
		t.Fatalf("wrote all %d bytes to a peer that reads nothing", n)
	}
	checkOpError(t, err, "write", os.ErrDeadlineExceeded)
}

func TestCloseUnblocksRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		checkOpError(t, err, "read", net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5 s after Close")
	}
}

// A peer that reset the connection: the write fails with the errno, not
// a signal (SIGPIPE is the runtime's to ignore, as for net.TCPConn).
func TestWriteToResetPeer(t *testing.T) {
	c, peer := pair(t)
	peer.SetLinger(0)
	peer.Close()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Write([]byte("after the reset\n"))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("100 writes to a reset connection succeeded")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("error %v (%T) is not a *net.OpError with Op write", err, err)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("error %v is neither ECONNRESET nor EPIPE", err)
	}
}

// Concurrent Reads take turns, as net.TCPConn's do: every byte arrives
// once, and the race detector sees no shared state.
func TestConcurrentReadsTakeTurns(t *testing.T) {
	const size = 1 << 20
	c, peer := pair(t)
	go func() {
		peer.Write(pattern(size))
		peer.CloseWrite()
	}()
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			buf := make([]byte, 1000)
			for range size {
				n, err := c.Read(buf)
				mu.Lock()
				total += n
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if total != size {
		t.Fatalf("4 concurrent readers got %d bytes, want %d", total, size)
	}
}

// ReadFrom goes to the TCP connection (splice from another socket).
func TestReadFrom(t *testing.T) {
	c, peer := pair(t)
	src, srcPeer := pair(t)
	want := pattern(1 << 20)
	go func() {
		srcPeer.Write(want)
		srcPeer.Close()
	}()
	errc := make(chan error, 1)
	go func() {
		_, err := c.ReadFrom(src)
		c.CloseWrite()
		errc <- err
	}()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes that differ from the %d sent", len(got), len(want))
	}
}
