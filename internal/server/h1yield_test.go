package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
)

// TestH1FastYieldsOnlyWhenNoRequestWaits: after a response has gone out
// whole, the fast loop yields its CPU once, and only when no other request
// is waiting for its answer (sockio.YieldCPU says why). A request blocked
// before its response stops the yields; a response that is streaming does
// not; a handler that panics leaves no request counted as waiting; and
// Options.NoPeerYield turns it off.
func TestH1FastYieldsOnlyWhenNoRequestWaits(t *testing.T) {
	if forceStdHTTP1 {
		t.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off")
	}
	yields := testkit.CountCalls(t, &yieldCPU)
	hold := make(chan struct{})
	holding := make(chan struct{}, 1)
	streaming := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			io.WriteString(w, "hello")
		case "/hold": // waits before answering
			holding <- struct{}{}
			select {
			case <-hold:
			case <-time.After(h1Wait):
			}
			io.WriteString(w, "held")
		case "/stream": // answers at once, then keeps the body open
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			streaming <- struct{}{}
			select {
			case <-hold:
			case <-time.After(h1Wait):
			}
		case "/panic":
			panic("handler failed")
		}
	})
	srv := start(t, h, Options{})

	conn := dialH1(t, srv.addr)
	br := bufio.NewReader(conn)
	get := func(c net.Conn, br *bufio.Reader, path, want string) {
		t.Helper()
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, got := readH1Response(t, br, "GET"); got != want {
			t.Fatalf("GET %s: body %q, want %q", path, got, want)
		}
	}
	await := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(h1Wait):
			t.Fatal(what)
		}
	}
	// expect waits for the count to settle: the client can read a response
	// before the server's yield that follows its write.
	expect := func(what string, want int64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for i := 0; i < 400 && yields.Load() < want && time.Now().Before(deadline); i++ {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // and that no extra one follows
		if got := yields.Load(); got != want {
			t.Fatalf("%s: %d yields so far, want %d", what, got, want)
		}
	}

	get(conn, br, "/length", "hello")
	expect("a lone response sent as soon as its length is reached", 1)
	get(conn, br, "/chunked", "hello")
	expect("a lone chunked response, sent when the handler returns", 2)

	// Another connection's request waits for its answer: no yields.
	other := dialH1(t, srv.addr)
	otherBR := bufio.NewReader(other)
	io.WriteString(other, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	await(holding, "the held request did not reach its handler")
	get(conn, br, "/length", "hello")
	expect("a response while another request waits", 2)
	close(hold)
	if _, got := readH1Response(t, otherBR, "GET"); got != "held" {
		t.Fatalf("held response %q", got)
	}
	expect("the held response, alone when it went out", 3)

	// A response that is streaming is answered: it does not stop yields.
	hold = make(chan struct{})
	io.WriteString(other, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	await(streaming, "the stream did not start")
	get(conn, br, "/length", "hello")
	expect("a response while another streams", 4)
	close(hold)
	if _, got := readH1Response(t, otherBR, "GET"); got != "" {
		t.Fatalf("stream body %q", got)
	}
	expect("the stream's end, alone", 5)

	// A panic before any answer leaves nothing counted as waiting.
	panicking := dialH1(t, srv.addr)
	io.WriteString(panicking, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	panicking.SetReadDeadline(time.Now().Add(h1Wait))
	io.Copy(io.Discard, panicking) // the server closes the connection
	get(conn, br, "/length", "hello")
	expect("a lone response after a handler panicked", 6)

	// Turned off.
	off := start(t, h, Options{NoPeerYield: true})
	offConn := dialH1(t, off.addr)
	get(offConn, bufio.NewReader(offConn), "/length", "hello")
	expect("NoPeerYield", 6)
}
