package server

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The coalescing writer as the server uses it: many concurrent streams of
// every size arrive whole, and a graceful shutdown or a protocol error
// still delivers the in-flight response and the GOAWAY. Which connections
// coalesce is TestCoalescingConnEndToEnd's (h2write_test.go).

// patternHandler answers /n/SIZE with SIZE bytes of a pattern that differs
// per request (the query's "id"), so a byte from another stream's response
// cannot pass for the right one.
func patternHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, err := strconv.Atoi(r.URL.Query().Get("size"))
		if err != nil {
			http.Error(w, "size", 400)
			return
		}
		w.Write(pattern(r.URL.Query().Get("id"), size))
	})
}

func pattern(id string, size int) []byte {
	unit := []byte(id + ":0123456789abcdefghijklmnopqrstuvwxyz;")
	return bytes.Repeat(unit, size/len(unit)+1)[:size]
}

// fetchAll sends conns*perConn requests of varied sizes, perConn at a time
// on each of conns clients, and checks every body byte for byte.
func fetchAll(t *testing.T, newClient func() (*http.Client, func()), base string, conns, perConn int) {
	t.Helper()
	sizes := []int{0, 1, 100, 4 << 10, 16<<10 + 3, 100 << 10, 300 << 10}
	var wg sync.WaitGroup
	errs := make(chan error, conns*perConn)
	for c := range conns {
		client, done := newClient()
		defer done()
		for i := range perConn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("c%di%d", c, i)
				size := sizes[(c+i)%len(sizes)]
				res, err := client.Get(fmt.Sprintf("%s/?id=%s&size=%d", base, id, size))
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %v", id, err)
				case res.ProtoMajor != 2:
					errs <- fmt.Errorf("%s: served over %s, want HTTP/2", id, res.Proto)
				case !bytes.Equal(body, pattern(id, size)):
					errs <- fmt.Errorf("%s: body of %d bytes differs from the %d sent", id, len(body), size)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestH2ManyStreamsArriveWhole(t *testing.T) {
	t.Run("h2c", func(t *testing.T) {
		srv := start(t, patternHandler(), Options{H2C: true})
		fetchAll(t, func() (*http.Client, func()) {
			c, tr := h2cClient()
			return c, tr.CloseIdleConnections
		}, "http://"+srv.addr, 4, 40)
	})
	t.Run("TLS", func(t *testing.T) {
		cert, key, roots := selfSigned(t)
		srv := start(t, patternHandler(), Options{TLSCert: cert, TLSKey: key})
		fetchAll(t, func() (*http.Client, func()) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
			return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr.CloseIdleConnections
		}, "https://"+srv.addr, 4, 40)
	})
}

// TestH2GracefulShutdownDelivers: a response in flight when the shutdown
// begins arrives whole, over h2c and TLS, and Serve returns.
func TestH2GracefulShutdownDelivers(t *testing.T) {
	cert, key, roots := selfSigned(t)
	for _, tc := range []struct {
		name   string
		o      Options
		client func() (*http.Client, func())
		scheme string
	}{
		{"h2c", Options{H2C: true}, func() (*http.Client, func()) {
			c, tr := h2cClient()
			return c, tr.CloseIdleConnections
		}, "http"},
		{"TLS", Options{TLSCert: cert, TLSKey: key}, func() (*http.Client, func()) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
			return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr.CloseIdleConnections
		}, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entered := make(chan struct{})
			var once sync.Once
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					once.Do(func() { close(entered) })
					time.Sleep(300 * time.Millisecond)
				}
				w.Write(pattern("slow", 200<<10))
			})
			o := tc.o
			o.ShutdownTimeout = 5 * time.Second
			srv := start(t, h, o)
			client, done := tc.client()
			defer done()
			base := tc.scheme + "://" + srv.addr
			// One request first, so the slow one shares a warm connection.
			res, _ := get(t, client, base+"/")
			if res.ProtoMajor != 2 {
				t.Fatalf("served over %s", res.Proto)
			}
			type result struct {
				body []byte
				err  error
			}
			got := make(chan result, 1)
			go func() {
				res, err := client.Get(base + "/slow")
				if err != nil {
					got <- result{err: err}
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				got <- result{b, err}
			}()
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("request did not reach the handler")
			}
			srv.cancel()
			var r result
			select {
			case r = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("in-flight response not delivered within 5s of the shutdown")
			}
			if r.err != nil || !bytes.Equal(r.body, pattern("slow", 200<<10)) {
				t.Fatalf("in-flight response: %d bytes, %v", len(r.body), r.err)
			}
			if err := srv.stop(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestH2ShutdownGoAwayReachesClient reads the frames themselves: the
// in-flight stream's response and the shutdown's GOAWAY reach the client
// before the connection closes.
func TestH2ShutdownGoAwayReachesClient(t *testing.T) {
	entered := make(chan struct{})
	var once sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(entered) })
		time.Sleep(200 * time.Millisecond)
		io.WriteString(w, "finished")
	})
	srv := start(t, h, Options{H2C: true, ShutdownTimeout: 5 * time.Second})
	c := dialH2(t, srv.addr, "/slow")
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hdr, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	c.flush(t)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach the handler")
	}
	srv.cancel()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not close the connection within 10s of the shutdown")
	}
	t.Logf("server: %s", c.summary())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAway == nil || *c.goAway != http2.ErrCodeNo {
		t.Errorf("want a GOAWAY NO_ERROR before the close")
	}
	if c.status[1] != "200" || c.dataBytes != len("finished") {
		t.Errorf("in-flight stream: status %q, %d body bytes; want 200 and %d", c.status[1], c.dataBytes, len("finished"))
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestH2ProtocolErrorGoAwayReachesClient: on a connection error the
// client is told why (GOAWAY PROTOCOL_ERROR) before the close. net/http
// closes a second after the GOAWAY, so this does not test Close with bytes
// pending; TestCoalescingConnCloseFlushes does.
func TestH2ProtocolErrorGoAwayReachesClient(t *testing.T) {
	srv := start(t, patternHandler(), Options{H2C: true})
	for i := range 2 {
		c := dialH2(t, srv.addr, "/")
		if err := c.fr.WriteData(0, false, []byte("DATA on stream 0")); err != nil {
			t.Fatal(err)
		}
		c.flush(t)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the server kept the connection 10s after a connection error")
		}
		c.mu.Lock()
		goAway := c.goAway
		c.mu.Unlock()
		if goAway == nil || *goAway != http2.ErrCodeProtocol {
			t.Fatalf("connection %d: want GOAWAY PROTOCOL_ERROR before the close; server: %s", i, c.summary())
		}
		c.close()
	}
}
