package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
)

// These tests go through a real server, whose request contexts can end, so
// the synchronous path runs its fast window (h1watch.go) and escalates to
// watching the client's context when an exchange outlasts it.

func h1WatchProxy(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	h, _ := h1Proxy(t, addr, proxy.TransportOptions{}, proxy.RetryPolicy{Retries: -1})
	px := frontServer(t, h)
	t.Cleanup(px.Close)
	return px
}

// An upstream slower than the window, before its headers and inside its
// body, is answered in full, and the connection stays usable: the window's
// deadlines are gone when it returns to the pool.
func TestH1SlowUpstreamOutlastsFastWindow(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		for {
			req, err := u.readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/slowbody" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				time.Sleep(250 * time.Millisecond)
				io.WriteString(c, "world")
				continue
			}
			if req.URL.Path == "/slow" {
				time.Sleep(250 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				time.Sleep(250 * time.Millisecond)
				io.WriteString(c, "world")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
		}
	})
	px := h1WatchProxy(t, u.ln.Addr().String())
	client := isolatedClient(t)
	big := strings.Repeat("y", 60<<10) // written with the window's write deadline
	for i, tc := range []struct{ path, body, want string }{
		{"/slow", "", "helloworld"}, {"/slowbody", "", "helloworld"}, {"/fast", big, "fast"}, {"/fast", "", "fast"},
	} {
		if i >= 2 {
			time.Sleep(150 * time.Millisecond) // idle past a window's end
		}
		res, err := client.Post(px.URL+tc.path, "text/plain", strings.NewReader(tc.body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || string(b) != tc.want {
			t.Fatalf("request %d: %d %q %v", i, res.StatusCode, b, err)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1 (reused after slow exchanges)", n)
	}
}

// A response header timeout shorter than the window is still a timeout.
func TestH1HeaderTimeoutInsideFastWindow(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		if _, err := u.readRequest(br); err != nil {
			return
		}
		time.Sleep(time.Second)
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{ResponseHeaderTimeout: 30 * time.Millisecond},
		proxy.RetryPolicy{Retries: -1})
	px := frontServer(t, h)
	defer px.Close()
	start := time.Now()
	res, err := isolatedClient(t).Get(px.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("504 after %v: the header timeout waited for the upstream", d)
	}
}

// A request too big to sit in the socket buffers, to an upstream that reads
// it late, is written in full past the window.
func TestH1SlowReaderOutlastsFastWindow(t *testing.T) {
	body := strings.Repeat("x", 60<<10)
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		time.Sleep(300 * time.Millisecond)
		req, err := u.readRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = req
	})
	px := h1WatchProxy(t, u.ln.Addr().String())
	res, err := isolatedClient(t).Post(px.URL+"/up", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "ok" || u.requests.Load() != 1 {
		t.Fatalf("%d %q, upstream saw %d requests", res.StatusCode, b, u.requests.Load())
	}
}

// A client that leaves is noticed whether it leaves inside the window or
// after it: the upstream's connection is closed soon after.
func TestH1ClientLeavesBeforeAndAfterFastWindow(t *testing.T) {
	for _, after := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			closed := make(chan time.Time, 1)
			u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
				if _, err := u.readRequest(br); err != nil {
					return
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c) // until the proxy closes the connection
				closed <- time.Now()
			})
			px := h1WatchProxy(t, u.ln.Addr().String())
			ctx, cancel := context.WithTimeout(context.Background(), after)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", px.URL+"/hold", nil)
			if res, err := isolatedClient(t).Do(req); err == nil {
				res.Body.Close()
				t.Fatalf("got %d, want the client's own timeout", res.StatusCode)
			}
			left := time.Now()
			select {
			case at := <-closed:
				// The window is 100 ms; allow for a loaded machine.
				if d := at.Sub(left); d > time.Second {
					t.Fatalf("upstream connection closed %v after the client left", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("upstream connection still open 3 s after the client left")
			}
		})
	}
}
