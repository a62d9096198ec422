package server

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestH1FastSendsCompleteResponseEarly: once a handler has written all the
// bytes its Content-Length declared, the fast loop sends the response
// without waiting for the handler to return (a proxy logs, counts and
// returns its upstream connection after the last byte). The client reads
// the whole response while the handler is still blocked, and the connection
// then serves the next request as usual. Without a declared length the
// body may still grow, so nothing goes out before the handler returns.
func TestH1FastSendsCompleteResponseEarly(t *testing.T) {
	if forceStdHTTP1 {
		t.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off")
	}
	long := strings.Repeat("x", 3*pendingMax)
	cases := []struct {
		name  string
		write func(w http.ResponseWriter)
		body  string
		early bool
	}{
		{"short body", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "5")
			w.Write([]byte("hello"))
		}, "hello", true},
		{"WriteString", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}, "hello", true},
		{"long body in two writes", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(long)))
			w.Write([]byte(long[:pendingMax+1]))
			w.Write([]byte(long[pendingMax+1:]))
		}, long, true},
		{"explicit WriteHeader", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte("created"))
		}, "created", true},
		{"no Content-Length", func(w http.ResponseWriter) {
			w.Write([]byte("hello"))
		}, "hello", false},
		{"body short of its Content-Length", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "10")
			w.Write([]byte("hello"))
		}, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var release chan struct{}
			quit := make(chan struct{}) // a failed test must not wait out h1Wait
			var quitOnce sync.Once
			returned := make(chan struct{}, 2)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer func() { returned <- struct{}{} }()
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				tc.write(w)
				select {
				case <-release:
				case <-quit:
				case <-time.After(h1Wait):
				}
			})
			// With the slow-client watch around the writer, and without.
			for _, mode := range []struct {
				name string
				o    Options
			}{{"watched", Options{}}, {"bare", Options{BodyReadTimeout: -1, WriteIdleTimeout: -1}}} {
				o := mode.o
				release = make(chan struct{})
				srv := start(t, h, o)
				t.Cleanup(func() { quitOnce.Do(func() { close(quit) }) }) // before the server's cleanup
				conn := dialH1(t, srv.addr)
				br := bufio.NewReader(conn)
				io.WriteString(conn, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
				if !tc.early {
					// Nothing may arrive while the handler runs.
					conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					if _, err := br.Peek(1); !h1IsTimeout(err) {
						t.Fatalf("%s: the response began before the handler returned (%v)", mode.name, err)
					}
					conn.SetReadDeadline(time.Now().Add(h1Wait))
					close(release)
					<-returned
					if tc.body == "" {
						continue // a body short of its length closes the connection
					}
				}
				if tc.early {
					// The handler stays blocked for h1Wait: a response
					// held back until it returns does not come in time.
					conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				}
				res, err := http.ReadResponse(br, nil)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(res.Body)
				}
				if err != nil {
					t.Fatalf("%s: the response did not come while the handler ran: %v (%d body bytes)", mode.name, err, len(got))
				}
				if string(got) != tc.body || res.Close {
					t.Fatalf("%s: got %d body bytes (close %v), want %d on a kept connection", mode.name, len(got), res.Close, len(tc.body))
				}
				conn.SetReadDeadline(time.Now().Add(h1Wait))
				if tc.early {
					select {
					case <-returned:
						t.Fatalf("%s: the handler returned before it was released", mode.name)
					default:
					}
					close(release)
					<-returned
				}
				io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				if _, got := readH1Response(t, br, "GET"); got != "next" {
					t.Fatalf("%s: next response %q", mode.name, got)
				}
				<-returned
			}
		})
	}
}
