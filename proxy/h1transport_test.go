package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// scriptedUpstream accepts connections and hands each to serve, counting
// connections and requests. Connections are closed on cleanup.
type scriptedUpstream struct {
	ln       net.Listener
	conns    atomic.Int32
	requests atomic.Int32
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     []net.Conn
}

func newScriptedUpstream(t *testing.T, serve func(u *scriptedUpstream, c net.Conn, br *bufio.Reader)) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			u.mu.Lock()
			u.open = append(u.open, c)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				serve(u, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.open {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// readRequest reads one request (headers and body) and counts it.
func (u *scriptedUpstream) readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	u.requests.Add(1)
	return req, err
}

func h1Proxy(t *testing.T, addr string, opts proxy.TransportOptions, retry proxy.RetryPolicy) (http.Handler, *proxy.Transport) {
	t.Helper()
	tr := proxy.NewTransport(opts)
	h, err := proxy.New(proxy.Config{
		Upstreams: upstream.NewPool(nil, upstream.New(addr)),
		Transport: tr,
		Retry:     retry,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); tr.CloseIdleConnections() })
	return h, tr
}

func serveOnce(h http.Handler, method, target, body string) (*http.Response, string) {
	var r *http.Request
	if body != "" {
		r = httpNewRequest(method, target, strings.NewReader(body))
	} else {
		r = httpNewRequest(method, target, nil)
	}
	rec := newRecorder()
	h.ServeHTTP(rec, r)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// An upstream that closes a kept-alive connection between requests (its
// keep-alive timeout is shorter than ours) must not cost the next request,
// POST included: the idle connection is found dead before it is used.
func TestH1StaleKeepAliveIsNotUsed(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		if _, err := u.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Closes after one request although it did not say so.
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{}, proxy.RetryPolicy{Retries: -1})
	for i := range 5 {
		res, body := serveOnce(h, "POST", "http://example.com/x", "data")
		if res.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond) // let the FIN arrive
	}
	if n := u.requests.Load(); n != 5 {
		t.Fatalf("upstream saw %d requests, want 5 (none duplicated)", n)
	}
}

// Keep-alive works: sequential requests share one upstream connection.
func TestH1ReusesConnections(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := u.readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{}, proxy.RetryPolicy{})
	for i := range 20 {
		if res, body := serveOnce(h, "GET", "http://example.com/x", ""); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections for 20 sequential requests, want 1", n)
	}
}

// Bytes after the end of a response mean the upstream's framing cannot be
// trusted: the connection is not reused, and the extra bytes never become
// the next request's response.
func TestH1ExtraBytesAfterResponseCloseConnection(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := u.readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+
				"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
		}
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{}, proxy.RetryPolicy{})
	for i := range 3 {
		if res, body := serveOnce(h, "GET", "http://example.com/x", ""); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want the first response only", i, res.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := u.conns.Load(); n != 3 {
		t.Fatalf("%d upstream connections, want 3 (none reused after extra bytes)", n)
	}
}

// Response headers beyond MaxResponseHeaderBytes are refused with 502
// instead of being read without bound.
func TestH1ResponseHeaderLimit(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		if _, err := u.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Big: " + strings.Repeat("a", 1000) + "\r\n"
		for range 100 { // ~100 KB of headers
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
		io.WriteString(c, "Content-Length: 0\r\n\r\n")
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{MaxResponseHeaderBytes: 16 << 10}, proxy.RetryPolicy{Retries: -1})
	if res, _ := serveOnce(h, "GET", "http://example.com/x", ""); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", res.StatusCode)
	}
}

// The response header timeout applies on the synchronous path: 504.
func TestH1ResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		if _, err := u.readRequest(br); err != nil {
			return
		}
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	defer close(release)
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{ResponseHeaderTimeout: 100 * time.Millisecond}, proxy.RetryPolicy{Retries: -1})
	start := time.Now()
	res, _ := serveOnce(h, "GET", "http://example.com/x", "")
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// A request's own framing headers never reach the upstream from the header
// map: Content-Length comes from the body the proxy holds.
func TestH1FramingFromBodyNotHeaders(t *testing.T) {
	got := make(chan string, 1)
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		got <- head.String()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{}, proxy.RetryPolicy{})
	r := httpNewRequest("POST", "http://example.com/x", strings.NewReader("abc"))
	r.Header["Content-Length"] = []string{"999"}
	r.Header["Transfer-Encoding"] = []string{"chunked"}
	h.ServeHTTP(newRecorder(), r)
	head := <-got
	if !strings.Contains(head, "Content-Length: 3\r\n") || strings.Contains(head, "999") || strings.Contains(head, "chunked") {
		t.Fatalf("upstream got framing from the header map:\n%s", head)
	}
}

// A reused connection whose upstream then goes silent times out once: the
// request is not resent on a new connection (which would double the wait
// and send it twice).
func TestH1TimeoutOnReusedConnectionIsNotResent(t *testing.T) {
	release := make(chan struct{})
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := u.readRequest(br); err != nil {
				return
			}
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			select { // silent from the second request on
			case <-release:
			case <-time.After(5 * time.Second):
			}
			return
		}
	})
	defer close(release)
	const timeout = 300 * time.Millisecond
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{ResponseHeaderTimeout: timeout}, proxy.RetryPolicy{Retries: -1})
	if res, body := serveOnce(h, "GET", "http://example.com/x", ""); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("first request: %d %q", res.StatusCode, body)
	}
	start := time.Now()
	res, _ := serveOnce(h, "GET", "http://example.com/x", "")
	took := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	if took > 2*timeout-50*time.Millisecond {
		t.Errorf("took %v with a %v header timeout: the request was resent", took, timeout)
	}
	if n := u.requests.Load(); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
}
