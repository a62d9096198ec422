package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
)

// heldUpstream answers "GET /hold" only when release is closed, closes the
// connection without answering "GET /drop", and answers anything else at
// once. It reads requests with net/http's parser.
func heldUpstream(t *testing.T, release <-chan struct{}) string {
	return testkit.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/hold":
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
			case "/drop":
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
}

// TestExchangeYieldsOnlyWhenNoOtherAwaits: the synchronous path yields its
// CPU once after writing a request, and only when no other exchange is
// waiting for its response head (sockio.YieldCPU says why). A failed
// exchange leaves nothing counted; NoPeerYield turns it off.
func TestExchangeYieldsOnlyWhenNoOtherAwaits(t *testing.T) {
	if forceNetHTTP {
		t.Skip("SLUICE_TEST_NETHTTP=1: the synchronous path is off")
	}
	yields := testkit.CountCalls(t, &yieldCPU)
	release := make(chan struct{})
	addr := heldUpstream(t, release)
	tr := NewTransport(TransportOptions{})
	t.Cleanup(tr.CloseIdleConnections)
	get := func(tr *Transport, path string) error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		res, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err == nil && string(b) != "ok" {
			t.Errorf("GET %s: body %q", path, b)
		}
		return err
	}
	expect := func(what string, want int64) {
		t.Helper()
		if got := yields.Load(); got != want {
			t.Fatalf("%s: %d yields so far, want %d", what, got, want)
		}
	}

	if err := get(tr, "/"); err != nil {
		t.Fatal(err)
	}
	expect("a lone exchange", 1)

	held := make(chan error, 1)
	go func() { held <- get(tr, "/hold") }()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 1000 && yields.Load() < 2 && time.Now().Before(deadline); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	expect("the held exchange, alone when it was written", 2)
	if n := tr.awaiting.Load(); n != 1 {
		t.Fatalf("%d exchanges awaiting a response, want the held one", n)
	}
	if err := get(tr, "/"); err != nil {
		t.Fatal(err)
	}
	expect("an exchange while another awaits its response", 2)
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}

	if err := get(tr, "/drop"); err == nil {
		t.Fatal("GET /drop: no error from a connection closed without an answer")
	}
	// On a kept-alive connection the exchange is sent once more on a new
	// one (roundTripH1), and that fails too: two exchanges, each alone.
	expect("the dropped exchange and its resend", 4)
	if err := get(tr, "/"); err != nil {
		t.Fatal(err)
	}
	expect("a lone exchange after failed ones", 5)

	off := NewTransport(TransportOptions{NoPeerYield: true})
	t.Cleanup(off.CloseIdleConnections)
	if err := get(off, "/"); err != nil {
		t.Fatal(err)
	}
	expect("NoPeerYield", 5)
}
