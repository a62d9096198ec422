package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// Helpers for faults_test.go: scripted raw-TCP upstreams on loopback, a
// quiet proxy in front of them, a client that records exactly what it saw,
// and an open file descriptor counter.

// faultQuietLogger swallows the proxy's error logs: a broken upstream is the
// point of these tests, and a passing test prints nothing.
var faultQuietLogger = slog.New(slog.DiscardHandler)

// faultPeerWait bounds how long an upstream connection waits for the proxy
// to close it after its script is done.
const faultPeerWait = 5 * time.Second

// faultScript is what a scripted upstream does with one accepted
// connection. It returns true to leave the connection open: the upstream
// then waits (bounded) for the proxy to close it and records when it did.
type faultScript func(fc *faultConn) (keepOpen bool)

// faultConn is one accepted upstream connection.
type faultConn struct {
	net.Conn
	br *bufio.Reader
	u  *faultUpstream
	n  int // 1 for the first connection the proxy opened, 2 for the next...
}

// readRequest reads one request (head and body) from the proxy.
func (fc *faultConn) readRequest() (*http.Request, error) {
	_ = fc.SetReadDeadline(time.Now().Add(faultPeerWait))
	req, err := http.ReadRequest(fc.br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
	req.Body.Close()
	_ = fc.SetReadDeadline(time.Time{})
	return req, err
}

// write sends raw bytes, bounded by a deadline.
func (fc *faultConn) write(s string) error {
	_ = fc.SetWriteDeadline(time.Now().Add(faultPeerWait))
	_, err := io.WriteString(fc.Conn, s)
	return err
}

// noteClosed records that the proxy closed (or reset) this connection now.
func (fc *faultConn) noteClosed() {
	select {
	case fc.u.closed <- time.Now():
	default:
	}
}

// awaitPeerClose reads until the proxy closes the connection (EOF or
// reset) and records the time; it gives up after faultPeerWait.
func (fc *faultConn) awaitPeerClose() {
	_ = fc.SetReadDeadline(time.Now().Add(faultPeerWait))
	buf := make([]byte, 4096)
	for {
		_, err := fc.br.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return // still open: the test's check reports it
		}
		fc.noteClosed()
		return
	}
}

// faultUpstream is a loopback TCP listener that runs a script per
// connection. Close stops it and waits for every connection goroutine.
type faultUpstream struct {
	ln       net.Listener
	script   faultScript
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
	closed   chan time.Time // one entry per connection the proxy closed
	once     sync.Once
}

// faultStart starts a scripted upstream; it is closed when the test ends.
func faultStart(t *testing.T, script faultScript) *faultUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &faultUpstream{ln: ln, script: script, conns: map[net.Conn]struct{}{}, closed: make(chan time.Time, 16)}
	u.wg.Add(1)
	go u.acceptLoop()
	t.Cleanup(u.Close)
	return u
}

func (u *faultUpstream) Addr() string { return u.ln.Addr().String() }

func (u *faultUpstream) acceptLoop() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return // listener closed
		}
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.accepted++
		n := u.accepted
		u.wg.Add(1)
		u.mu.Unlock()
		go func() {
			defer u.wg.Done()
			fc := &faultConn{Conn: c, br: bufio.NewReader(c), u: u, n: n}
			if u.script(fc) {
				fc.awaitPeerClose()
			}
			c.Close()
			u.mu.Lock()
			delete(u.conns, c)
			u.mu.Unlock()
		}()
	}
}

// Accepted is the number of connections the proxy opened.
func (u *faultUpstream) Accepted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.accepted
}

// Close stops accepting, cuts every open connection and waits for the
// connection goroutines. It is idempotent.
func (u *faultUpstream) Close() {
	u.once.Do(func() {
		u.ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
}

// faultRefusedAddr returns a loopback address nobody listens on.
func faultRefusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// faultProxyOptions configure faultNewProxy.
type faultProxyOptions struct {
	headerTimeout time.Duration // TransportOptions.ResponseHeaderTimeout
	retries       int           // RetryPolicy.Retries; 0 means none (-1)
}

// faultNewProxy starts a proxy (through newProxy) with its own transport in
// front of addr. Cleanup closes the proxy server, then the transport's idle
// connections.
func faultNewProxy(t *testing.T, addr string, o faultProxyOptions) (*httptest.Server, *proxy.Handler, *upstream.Upstream) {
	t.Helper()
	tr := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: o.headerTimeout})
	t.Cleanup(tr.CloseIdleConnections) // registered first, runs after the server closed
	retries := o.retries
	if retries == 0 {
		retries = -1
	}
	up := upstream.New(addr)
	srv := newProxy(t, proxy.Config{
		Upstreams: upstream.NewPool(nil, up),
		Transport: tr,
		Retry:     proxy.RetryPolicy{Retries: retries, Backoff: time.Millisecond},
		Logger:    faultQuietLogger,
	})
	h, ok := srv.Config.Handler.(*proxy.Handler)
	if !ok {
		t.Fatalf("newProxy served %T, want *proxy.Handler", srv.Config.Handler)
	}
	return srv, h, up
}

// faultAwaitIdle polls (bounded: up to d) until no request is in flight on
// up, and returns the last count. The proxy releases an upstream just after
// the client got the last byte, so a short wait is normal.
func faultAwaitIdle(up *upstream.Upstream, d time.Duration) int64 {
	deadline := time.Now().Add(d)
	n := up.Inflight()
	for n != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		n = up.Inflight()
	}
	return n
}

// faultResult is everything the client saw.
type faultResult struct {
	status  int
	header  http.Header
	body    []byte
	doErr   error // from Client.Do: no response head at all
	readErr error // from reading the body: the stream was cut
	infos   []faultInfo
	done    time.Time // when the client finished (or gave up and closed)
}

type faultInfo struct {
	code   int
	header textproto.MIMEHeader
}

// aborted reports whether the client saw an error instead of a complete
// response.
func (r *faultResult) aborted() bool { return r.doErr != nil || r.readErr != nil }

// faultClientRequest describes the client side of a scenario.
type faultClientRequest struct {
	method  string
	path    string
	header  http.Header
	timeout time.Duration // whole exchange; default 5s
	limit   int64         // read at most this many body bytes, then close; 0: read all (bounded to 64 MiB)
}

// faultDo sends one request through the proxy with a fresh client
// connection and records the outcome. Every read is bounded by the timeout.
func faultDo(t *testing.T, proxyURL string, cr faultClientRequest) *faultResult {
	t.Helper()
	if cr.method == "" {
		cr.method = http.MethodGet
	}
	if cr.path == "" {
		cr.path = "/"
	}
	if cr.timeout == 0 {
		cr.timeout = 5 * time.Second
	}
	limit := cr.limit
	if limit == 0 {
		limit = 64 << 20
	}
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	defer tr.CloseIdleConnections()
	res := &faultResult{}
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if len(res.infos) < 10000 {
			res.infos = append(res.infos, faultInfo{code, textproto.MIMEHeader(http.Header(h).Clone())})
		}
		return nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), cr.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), cr.method, proxyURL+cr.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range cr.header {
		req.Header[k] = vv
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		res.doErr = err
		res.done = time.Now()
		return res
	}
	res.status, res.header = resp.StatusCode, resp.Header
	res.body, res.readErr = io.ReadAll(io.LimitReader(resp.Body, limit))
	resp.Body.Close() // an unfinished body closes the connection
	res.done = time.Now()
	mu.Lock()
	defer mu.Unlock()
	return res
}

// faultOpenFDs counts this process's open file descriptors, or -1 where
// /proc/self/fd does not exist.
func faultOpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// faultAwaitFDs polls (bounded: up to d) until at most want descriptors are
// open, and returns the last count.
func faultAwaitFDs(want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	n := faultOpenFDs()
	for n > want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = faultOpenFDs()
	}
	return n
}
