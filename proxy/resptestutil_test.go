package proxy_test

// Helpers for the response-side tests (response_test.go, stream_test.go,
// upgrade_test.go). Everything here is prefixed resp/ws so it cannot clash
// with other test helpers in this package.

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/wsframe"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// respIOTimeout bounds every socket operation of these tests.
const respIOTimeout = 10 * time.Second

// respLogBuf is a goroutine-safe log sink.
type respLogBuf = lockedBuffer

// respLogger returns a debug-level text logger writing to a fresh buffer.
func respLogger() (*slog.Logger, *respLogBuf) {
	b := &respLogBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// respEnv is a proxy under test with its Handler, captured logs and a count
// of finished ServeHTTP calls (including aborted ones).
type respEnv struct {
	srv      *httptest.Server
	h        *proxy.Handler
	logs     *respLogBuf
	finished atomic.Int64
}

func (e *respEnv) URL() string  { return e.srv.URL }
func (e *respEnv) Addr() string { return e.srv.Listener.Addr().String() }

// respProxy starts a proxy in front of the given upstream addresses
// ("127.0.0.1:port"). Unless cfg sets them, Upstreams is a round-robin pool
// over addrs and Logger captures into env.logs.
func respProxy(t *testing.T, cfg proxy.Config, addrs ...string) *respEnv {
	t.Helper()
	env := &respEnv{}
	if cfg.Upstreams == nil {
		cfg.Upstreams = respPool(addrs...)
	}
	if cfg.Logger == nil {
		cfg.Logger, env.logs = respLogger()
	}
	h, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	env.h = h
	env.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer env.finished.Add(1) // runs on http.ErrAbortHandler too
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { env.srv.Close(); h.Close() })
	return env
}

// respPool is a round-robin pool over addrs.
func respPool(addrs ...string) *upstream.Pool {
	ups := make([]*upstream.Upstream, 0, len(addrs))
	for _, a := range addrs {
		ups = append(ups, upstream.New(a))
	}
	return upstream.NewPool(nil, ups...)
}

// respAddr is the host:port of an httptest server.
func respAddr(s *httptest.Server) string { return s.Listener.Addr().String() }

// respWaitFinished waits until the proxy has finished n requests.
func (e *respEnv) waitFinished(t *testing.T, n int64) {
	t.Helper()
	respWaitFor(t, 5*time.Second, func() bool { return e.finished.Load() >= n },
		fmt.Sprintf("proxy to finish %d request(s)", n))
}

// respWaitFor polls cond every 5ms until it holds or d passed.
func respWaitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// respClient is an HTTP client with its own transport, closed at cleanup so
// goleak sees no idle connection goroutines.
func respClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// respRawUpstream starts a TCP server whose every connection is handed to
// handle (with a bufio.Reader over it). The connection is closed when handle
// returns; every connection has a deadline. At cleanup the listener and all
// connections are closed and all handlers waited for.
func respRawUpstream(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 { // bounded; ends when the listener closes
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(respIOTimeout))
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// respReadRequest reads one request from br and discards its body.
func respReadRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	req.Body.Close()
	return req, err
}

// respServeRaw returns a raw upstream handler that answers every request on
// the connection with the exact bytes resp (keep-alive), until the peer
// closes.
func respServeRaw(resp string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for range 100 {
			if _, err := respReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

// respDial opens a raw connection to addr, closed at cleanup, with a
// deadline.
func respDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, respIOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(respIOTimeout))
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// respHead is a response head exactly as received.
type respHead struct {
	proto  string
	code   int
	header http.Header
}

// respReadHead reads one response head (status line and header block) from
// br without interpreting it.
func respReadHead(br *bufio.Reader) (respHead, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return respHead{}, err
	}
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/") || len(rest) < 3 {
		return respHead{}, fmt.Errorf("malformed status line %q", line)
	}
	code, err := strconv.Atoi(rest[:3])
	if err != nil {
		return respHead{}, fmt.Errorf("malformed status line %q", line)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return respHead{}, err
	}
	return respHead{proto: proto, code: code, header: http.Header(mh)}, nil
}

// respReadBody reads the body that follows h according to its framing
// (chunked, Content-Length, or none for bodiless statuses / HEAD). For a
// chunked body it also returns the trailers.
func respReadBody(br *bufio.Reader, h respHead, head bool) (body []byte, trailer http.Header, err error) {
	if head || h.code == 204 || h.code == 304 || h.code/100 == 1 {
		return nil, nil, nil
	}
	if te := h.header.Values("Transfer-Encoding"); len(te) > 0 {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return nil, nil, fmt.Errorf("unexpected Transfer-Encoding %q", te)
		}
		body, err = io.ReadAll(httputil.NewChunkedReader(br))
		if err != nil {
			return body, nil, err
		}
		mh, err := textproto.NewReader(br).ReadMIMEHeader()
		return body, http.Header(mh), err
	}
	cl := h.header.Get("Content-Length")
	if cl == "" {
		return nil, nil, errors.New("no framing: neither chunked nor Content-Length")
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	if err != nil {
		return nil, nil, err
	}
	body = make([]byte, n)
	m, err := io.ReadFull(br, body)
	return body[:m], nil, err
}

// --- WebSocket, enough for an echo test (frames from internal/wsframe) ---

const (
	wsOpText  = wsframe.OpText
	wsOpBin   = wsframe.OpBinary
	wsOpClose = wsframe.OpClose
)

func wsAccept(key string) string { return wsframe.Accept(key) }

// wsWriteFrame writes one final frame; client frames must be masked.
func wsWriteFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	return wsframe.Write(w, op, true, payload, mask)
}

// wsReadFrame reads one final frame. wantMasked says whether the frame must
// be masked (frames to a server) or must not be (frames to a client).
func wsReadFrame(r io.Reader, wantMasked bool) (op byte, payload []byte, err error) {
	f, err := wsframe.Read(r, wantMasked, 16<<20)
	if err == nil && !f.Fin {
		err = errors.New("ws: fragmented frame not supported by this test client")
	}
	return f.Op, f.Payload, err
}

// wsEchoServer is an upstream that accepts WebSocket upgrades and echoes
// every data frame until a close frame (echoed too) or an error.
func wsEchoServer(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Sec-WebSocket-Key")
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
			http.Error(w, "websocket only", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * respIOTimeout))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
		if brw.Flush() != nil {
			return
		}
		for range 100000 { // bounded, and by the deadline above
			op, p, err := wsReadFrame(brw.Reader, true)
			if err != nil {
				return
			}
			if err := wsWriteFrame(c, op, p, false); err != nil || op == wsOpClose {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// wsDial performs a WebSocket handshake with the proxy at addr. extra is
// written in the same TCP write right after the request.
func wsDial(t *testing.T, addr, path string, extra []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := respDial(t, addr)
	var kb [16]byte
	binary.LittleEndian.PutUint64(kb[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(kb[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(kb[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	h, err := respReadHead(br)
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	if h.code != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: got status %d, want 101 (%v)", h.code, h.header)
	}
	if got := h.header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, wsAccept(key))
	}
	if !strings.EqualFold(h.header.Get("Upgrade"), "websocket") {
		t.Fatalf("Upgrade = %q, want websocket", h.header.Get("Upgrade"))
	}
	return c, br
}

// wsRaw101 is what a raw upstream answers to switch to websocket (no
// Sec-WebSocket-Accept: the raw tests do not check it).
const wsRaw101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

// wsRawUpgradeRequest is a websocket upgrade request for raw clients.
func wsRawUpgradeRequest(host string) string {
	return "GET /tunnel HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// respBodyReader returns a reader over the body that follows h: dechunked
// for chunked framing, otherwise the raw stream.
func respBodyReader(br *bufio.Reader, h respHead) io.Reader {
	if strings.EqualFold(h.header.Get("Transfer-Encoding"), "chunked") {
		return httputil.NewChunkedReader(br)
	}
	return br
}

// respReadWithin reads exactly len(want) body bytes from r within d and
// reports how long it took.
func respReadWithin(t *testing.T, c net.Conn, r io.Reader, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	got := make([]byte, len(want))
	n, err := io.ReadFull(r, got)
	elapsed := time.Since(start)
	_ = c.SetReadDeadline(time.Now().Add(respIOTimeout))
	if err != nil {
		t.Fatalf("read %q after %v: %v; want %q within %v", got[:n], elapsed, err, want, d)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	return elapsed
}

// respRecv waits up to d for a value from ch.
func respRecv[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	panic("unreachable")
}

// respSend sends v on ch without ever blocking (raw upstream handlers may
// run more than once, e.g. on retries; a blocked handler would hang the
// cleanup).
func respSend[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}
