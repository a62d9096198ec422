package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchdogOf returns the watchdog of a clientTimeouts handler.
func watchdogOf(t *testing.T, h http.Handler) *watchdog {
	t.Helper()
	th, ok := h.(*timeoutHandler)
	if !ok || th.dog == nil {
		t.Fatalf("clientTimeouts returned %T without a watchdog", h)
	}
	return th.dog
}

// idle reports whether no request is registered and the timer is off.
func (d *watchdog) idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.head == nil && !d.armed
}

// Requests that end, normally or by a panic, leave the watchdog's list;
// the timer stops a tick after the last one, so an idle server runs none.
func TestWatchdogIdleAfterRequests(t *testing.T) {
	o := Options{
		WriteIdleTimeout: 400 * time.Millisecond, BodyReadTimeout: 800 * time.Millisecond,
		// The server's own WriteTimeout takes HTTP/1's write deadline:
		// the write watch goes to the watchdog.
		WriteTimeout: time.Minute, ReadTimeout: time.Minute,
		Logger: slog.New(slog.DiscardHandler),
	}
	h := clientTimeouts(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/panic" {
			io.WriteString(w, "partial")
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	}), o)
	d := watchdogOf(t, h)
	if d.tick != 50*time.Millisecond {
		t.Fatalf("tick %v, want 50ms (an eighth of the finer limit)", d.tick)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i := range 20 {
		path := "/"
		if i%4 == 3 {
			path = "/panic"
		}
		res, err := http.Post(srv.URL+path, "text/plain", strings.NewReader("body"))
		if err != nil {
			if path == "/panic" {
				continue // the aborted response
			}
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	if !waitFor(time.Second, d.idle) {
		t.Fatal("a second after the last request the watchdog still has requests registered or its timer armed")
	}
}

// With the server's own ReadTimeout and WriteTimeout set (net/http's
// server, connection deadlines not ours), the watchdog alone enforces the
// limits on HTTP/1: a stalled upload gets its 408 long before the server's
// timeouts. (TestSlowRead has the client that stops reading.)
func TestWatchdogHTTP1WithServerTimeouts(t *testing.T) {
	o := Options{BodyReadTimeout: slowLimit, WriteIdleTimeout: slowLimit, ReadTimeout: time.Minute, WriteTimeout: time.Minute}

	t.Run("stalled upload", func(t *testing.T) {
		s := startStack(t, o)
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: sluice\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("b", 1000))
		t0 := time.Now()
		got, err := readUntilClosed(c, slowLimit+1500*time.Millisecond)
		took := time.Since(t0)
		status, _, _ := strings.Cut(string(got), "\r\n")
		t.Logf("after %v: %q", took.Round(time.Millisecond), status)
		if err != nil {
			t.Fatal(err)
		}
		if status != "HTTP/1.1 408 Request Timeout" {
			t.Errorf("got %q, want 408 Request Timeout", status)
		}
		if took < slowLimit-50*time.Millisecond {
			t.Errorf("cut off after %v, before BodyReadTimeout (%v)", took, slowLimit)
		}
	})
}

// Many short h2c streams while the watchdog ticks fast: none is cut off
// (each write takes far less than the limit), and registering, removing
// and checking from many goroutines at once is race-free.
func TestWatchdogManyStreamsNotCutOff(t *testing.T) {
	s := startStack(t, Options{WriteIdleTimeout: 200 * time.Millisecond, BodyReadTimeout: 200 * time.Millisecond})
	client, tr := h2cClient()
	defer tr.CloseIdleConnections()
	client.Timeout = 10 * time.Second
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range 8 {
		wg.Go(func() {
			for j := range 25 {
				var res *http.Response
				var err error
				if (i+j)%2 == 0 {
					res, err = client.Get("http://" + s.addr + "/ok")
				} else {
					res, err = client.Post("http://"+s.addr+"/upload", "text/plain", strings.NewReader(strings.Repeat("u", 10000)))
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || (string(b) != "ok" && string(b) != "10000") {
					mu.Lock()
					failures = append(failures, res.Status+" "+string(b))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of 200 requests failed, first: %s", len(failures), failures[0])
	}
}
