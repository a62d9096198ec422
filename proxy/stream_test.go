package proxy_test

// Streaming side of the response: flushing (SSE, unknown length, flush
// interval) and 1xx informational responses (100 Continue, 103 Early Hints).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
)

// TestStreamSSEEventWhileOpen: a server-sent event reaches the client within
// a second while the upstream still holds the stream open, with the default
// FlushInterval (0). The content-length case isolates the text/event-stream
// rule from the unknown-length rule.
func TestStreamSSEEventWhileOpen(t *testing.T) {
	t.Parallel()
	const event = "event: tick\ndata: one\n\n"
	t.Run("chunked", func(t *testing.T) {
		t.Parallel()
		wrote := make(chan struct{})
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, event)
			http.NewResponseController(w).Flush()
			close(wrote)
			select { // hold the stream open until the client leaves
			case <-r.Context().Done():
			case <-time.After(respIOTimeout):
			}
		}))
		t.Cleanup(be.Close)
		px := respProxy(t, proxy.Config{}, respAddr(be))
		streamCheckFirstBytes(t, px, wrote, event)
	})
	t.Run("content-length", func(t *testing.T) {
		t.Parallel()
		wrote := make(chan struct{})
		up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := respReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n"+
				"Content-Length: 100000\r\n\r\n"+event)
			close(wrote)
			io.Copy(io.Discard, br) // hold open until the proxy hangs up
		})
		px := respProxy(t, proxy.Config{}, up)
		streamCheckFirstBytes(t, px, wrote, event)
	})
}

// streamCheckFirstBytes requests / through px and requires want as the
// first body bytes within a second of the upstream having written them.
func streamCheckFirstBytes(t *testing.T, px *respEnv, wrote <-chan struct{}, want string) time.Duration {
	t.Helper()
	c, br := respDial(t, px.Addr())
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: example.test\r\n\r\n")
	respRecv(t, wrote, 5*time.Second, "upstream to write")
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(time.Second))
	h, err := respReadHead(br)
	if err != nil {
		t.Fatalf("no response head within 1s of the upstream writing: %v", err)
	}
	if h.code != 200 {
		t.Fatalf("status %d", h.code)
	}
	left := time.Second - time.Since(start)
	respReadWithin(t, c, respBodyReader(br, h), want, left)
	return time.Since(start)
}

// TestStreamUnknownLengthFlushedPerWrite: with FlushInterval 0, every write
// of a response of unknown length (chunked, or delimited by close) reaches
// the client before the upstream writes the next one.
func TestStreamUnknownLengthFlushedPerWrite(t *testing.T) {
	t.Parallel()
	parts := []string{"first;", "second;", "third;"}
	run := func(t *testing.T, addr string, wrote chan int, ack chan struct{}) {
		px := respProxy(t, proxy.Config{}, addr)
		c, br := respDial(t, px.Addr())
		io.WriteString(c, "GET /parts HTTP/1.1\r\nHost: example.test\r\n\r\n")
		var body io.Reader
		for i, p := range parts {
			if got := respRecv(t, wrote, 5*time.Second, "upstream write"); got != i {
				t.Fatalf("upstream wrote part %d, want %d", got, i)
			}
			if body == nil {
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				h, err := respReadHead(br)
				if err != nil {
					t.Fatal(err)
				}
				if h.header.Get("Content-Length") != "" {
					t.Fatalf("unexpected Content-Length on a stream of unknown length: %v", h.header)
				}
				body = respBodyReader(br, h)
			}
			respReadWithin(t, c, body, p, time.Second)
			ack <- struct{}{}
		}
	}
	// upstreamParts writes the parts, each after the client acknowledged
	// the previous one.
	upstreamParts := func(write func(string) error, wrote chan<- int, ack <-chan struct{}) {
		for i, p := range parts {
			if write(p) != nil {
				return
			}
			wrote <- i
			select {
			case <-ack:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}
	t.Run("chunked", func(t *testing.T) {
		t.Parallel()
		wrote, ack := make(chan int, 1), make(chan struct{}, 1)
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			upstreamParts(func(p string) error {
				if _, err := io.WriteString(w, p); err != nil {
					return err
				}
				return rc.Flush()
			}, wrote, ack)
		}))
		t.Cleanup(be.Close)
		run(t, respAddr(be), wrote, ack)
	})
	t.Run("close-delimited", func(t *testing.T) {
		t.Parallel()
		wrote, ack := make(chan int, 1), make(chan struct{}, 1)
		up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := respReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"); err != nil {
				return
			}
			upstreamParts(func(p string) error { _, err := io.WriteString(c, p); return err }, wrote, ack)
		})
		run(t, up, wrote, ack)
	})
}

// TestStreamFlushIntervalContentLength: with FlushInterval 100ms, the first
// bytes of a response with a known length reach the client about one
// interval after the upstream wrote them, although the upstream then stalls.
func TestStreamFlushIntervalContentLength(t *testing.T) {
	t.Parallel()
	wrote := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "0123456789")
		http.NewResponseController(w).Flush()
		close(wrote)
		select { // stall
		case <-r.Context().Done():
		case <-time.After(respIOTimeout):
		}
	}))
	t.Cleanup(be.Close)
	px := respProxy(t, proxy.Config{FlushInterval: 100 * time.Millisecond}, respAddr(be))
	d := streamCheckFirstBytes(t, px, wrote, "0123456789")
	t.Logf("first bytes after %v with FlushInterval 100ms", d)
}

// TestStream100Continue: a client's Expect: 100-continue reaches the
// upstream; the client gets its 100 Continue only once the upstream sent
// one (here after 200ms of "deciding"); only then does the client send the
// body, the body arrives upstream, and no second 100 follows. (By design the
// 100 the client sees is net/http's own, written when the transport starts
// reading the body, so the upstream's 100 headers are not checked.)
func TestStream100Continue(t *testing.T) {
	t.Parallel()
	sent100 := make(chan struct{})
	var sent100Once sync.Once
	gotBody := make(chan string, 1)
	up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nno expect")
			return
		}
		time.Sleep(200 * time.Millisecond) // "deciding"
		sent100Once.Do(func() { close(sent100) })
		io.WriteString(c, "HTTP/1.1 100 Continue\r\nX-Continue-From: upstream\r\n\r\n")
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		respSend(gotBody, string(body))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\ngot:%s", len(body)+4, body)
	})
	px := respProxy(t, proxy.Config{}, up)
	c, br := respDial(t, px.Addr())
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
	h, err := respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	if h.code != http.StatusContinue {
		t.Fatalf("first response %d %v, want 100", h.code, h.header)
	}
	select {
	case <-sent100:
	default:
		t.Fatal("client got 100 Continue before the upstream sent one")
	}
	io.WriteString(c, "hello world")
	if got := respRecv(t, gotBody, 5*time.Second, "upstream to get the body"); got != "hello world" {
		t.Fatalf("upstream got body %q", got)
	}
	h, err = respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := respReadBody(br, h, false)
	if h.code != 200 || string(body) != "got:hello world" || err != nil {
		t.Fatalf("final response %d %q %v (a second 100 would show here)", h.code, body, err)
	}
}

// TestStream100ContinueRefused: when the upstream answers an Expect:
// 100-continue request with a final status and no 100, the client's first
// response is that final status: the proxy must not invite the body with a
// 100 Continue of its own. The outcome depends on a race inside the proxy,
// so the exchange is repeated (bounded) to make a wrong answer show.
func TestStream100ContinueRefused(t *testing.T) {
	t.Parallel()
	up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nnope")
		io.Copy(io.Discard, br)
	})
	px := respProxy(t, proxy.Config{}, up)
	const iterations = 30
	got100 := 0
	for range iterations {
		c, br := respDial(t, px.Addr())
		io.WriteString(c, "PUT /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		h, err := respReadHead(br)
		if err != nil {
			t.Fatal(err)
		}
		switch h.code {
		case http.StatusContinue:
			got100++
		case http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("first response %d, want 413", h.code)
		}
		c.Close()
	}
	if got100 > 0 {
		// BUG: the upstream answered 413 without 100, yet the client was
		// told "100 Continue" first. net/http's Transport sends the body
		// after a final non-100 answer on a connection it keeps (out.Close
		// is false), reading the client's body makes net/http's server
		// write its automatic 100 Continue, and that races the handler's
		// WriteHeader(413).
		t.Fatalf("in %d of %d exchanges the client got 100 Continue before the upstream's 413 (the upstream never sent 100)", got100, iterations)
	}
}

// TestStream103EarlyHints: a 103 with Link headers reaches the client
// before the final response; the upstream only writes the final response
// once the client has seen the 103.
func TestStream103EarlyHints(t *testing.T) {
	t.Parallel()
	seen := make(chan struct{})
	var seenOnce sync.Once
	timedOut := make(chan bool, 1)
	links := []string{"</style.css>; rel=preload; as=style", "</app.js>; rel=preload; as=script"}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, l := range links {
			w.Header().Add("Link", l)
		}
		w.WriteHeader(http.StatusEarlyHints)
		select {
		case <-seen:
			respSend(timedOut, false)
		case <-time.After(5 * time.Second):
			respSend(timedOut, true)
		}
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	t.Cleanup(be.Close)
	px := newProxy(t, proxy.Config{}, be)

	var mu sync.Mutex
	var got1xx []int
	var hints textproto.MIMEHeader
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		got1xx = append(got1xx, code)
		if code == http.StatusEarlyHints && hints == nil {
			hints = h
		}
		mu.Unlock()
		seenOnce.Do(func() { close(seen) })
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", px.URL+"/page", nil)
	res, err := respClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("final response %d %q", res.StatusCode, body)
	}
	if respRecv(t, timedOut, 5*time.Second, "upstream") {
		t.Fatal("the 103 did not reach the client before the final response was due")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got1xx, []int{103}) {
		t.Fatalf("client got 1xx %v, want [103]", got1xx)
	}
	if !slices.Equal(hints["Link"], links) {
		t.Fatalf("103 Link %q, want %q", hints["Link"], links)
	}
}

// TestStream1xxHopByHopStripped: hop-by-hop headers of a 103 (fixed ones and
// those named by Connection) do not reach the client, the Link does, and
// none of the 103's headers leak into the final response.
func TestStream1xxHopByHopStripped(t *testing.T) {
	t.Parallel()
	up := respRawUpstream(t, respServeRaw("HTTP/1.1 103 Early Hints\r\n"+
		"Connection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"+
		"Link: </a.css>; rel=preload\r\n\r\n"+
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	px := respProxy(t, proxy.Config{}, up)
	c, br := respDial(t, px.Addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
	h, err := respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	if h.code != http.StatusEarlyHints {
		t.Fatalf("first response %d, want 103", h.code)
	}
	if h.header.Get("Link") != "</a.css>; rel=preload" {
		t.Errorf("103 lost its Link: %v", h.header)
	}
	for _, k := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Connection"} {
		if v, ok := h.header[k]; ok {
			t.Errorf("103 carries hop-by-hop %s: %q", k, v)
		}
	}
	h, err = respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := respReadBody(br, h, false)
	if h.code != 200 || string(body) != "ok" || err != nil {
		t.Fatalf("final %d %q %v", h.code, body, err)
	}
	for _, k := range []string{"X-Secret", "Link"} {
		if v, ok := h.header[k]; ok {
			t.Errorf("103 header %s: %q leaked into the final response", k, v)
		}
	}
}

// TestStream1xxNotToHTTP10Client: RFC 9110 §15.2, a server MUST NOT send a
// 1xx response to an HTTP/1.0 client; the proxy is the server here.
func TestStream1xxNotToHTTP10Client(t *testing.T) {
	t.Parallel()
	up := respRawUpstream(t, respServeRaw("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	px := respProxy(t, proxy.Config{}, up)
	c, br := respDial(t, px.Addr())
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: example.test\r\n\r\n")
	h, err := respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	if h.code != 200 {
		// BUG: informational.go forwards every 1xx whatever the client's
		// protocol version; net/http writes it to HTTP/1.0 clients too.
		t.Fatalf("HTTP/1.0 client got %s %d first, want the final 200", h.proto, h.code)
	}
}

// TestStreamMany103Race: an upstream sends 30 103s back to back (below the
// proxy's cap on relayed 1xx per request) and then the final response, on
// many concurrent requests; every 103 is relayed in order before the final
// response, and the race detector sees no callback
// touch a response concurrently with its handler.
func TestStreamMany103Race(t *testing.T) {
	// Not parallel: a data race found here must be reported against this
	// test, not against whatever else runs at the time.
	const hints = 30
	var b strings.Builder
	for i := range hints {
		fmt.Fprintf(&b, "HTTP/1.1 103 Early Hints\r\nLink: </r%d>; rel=preload\r\n\r\n", i)
	}
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	up := respRawUpstream(t, respServeRaw(b.String()))
	px := respProxy(t, proxy.Config{}, up)
	client := respClient(t)

	const workers, perWorker = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				var n atomic.Int32
				var order atomic.Bool
				order.Store(true)
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					i := n.Add(1) - 1
					if code != 103 || h.Get("Link") != fmt.Sprintf("</r%d>; rel=preload", i) {
						order.Store(false)
					}
					return nil
				}}
				ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", px.URL()+"/", nil)
				res, err := client.Do(req)
				if err != nil {
					cancel()
					errs <- err
					return
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				cancel()
				if err != nil || string(body) != "ok" || n.Load() != hints || !order.Load() {
					errs <- fmt.Errorf("got %d 103s (in order: %v), body %q, err %v", n.Load(), order.Load(), body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStream103AboveRelayCap: an upstream sending more 1xx than the proxy
// relays per request (but fewer than the transport accepts) still gets its
// final response through intact.
func TestStream103AboveRelayCap(t *testing.T) {
	t.Parallel()
	const hints = 60
	up := respRawUpstream(t, respServeRaw(strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n", hints)+
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	px := respProxy(t, proxy.Config{}, up)
	c, br := respDial(t, px.Addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
	n := 0
	for range hints + 1 {
		h, err := respReadHead(br)
		if err != nil {
			t.Fatalf("after %d 103s: %v", n, err)
		}
		if h.code == http.StatusEarlyHints {
			n++
			continue
		}
		body, _, err := respReadBody(br, h, false)
		if h.code != 200 || string(body) != "ok" || err != nil {
			t.Fatalf("final %d %q %v after %d 103s", h.code, body, err, n)
		}
		t.Logf("%d of %d 103s relayed", n, hints)
		return
	}
	t.Fatalf("more than %d 103s relayed", hints)
}

// TestStream103ClientCancelRace: the upstream streams 103s without end and
// the client cancels mid-way, so the proxy's round trip returns while the
// transport is still delivering 1xx callbacks. The done-guard must keep
// late callbacks off the finished response (the race detector and net/http
// would notice), and the proxy must finish each request.
func TestStream103ClientCancelRace(t *testing.T) {
	// Not parallel: a data race found here must be reported against this
	// test, not against whatever else runs at the time.
	up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		bw := bufio.NewWriterSize(c, 512)
		for range 100 { // keep-alive, in case a request completes
			if _, err := respReadRequest(br); err != nil {
				return
			}
			for range 20000 {
				if _, err := bw.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"); err != nil {
					return
				}
			}
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if bw.Flush() != nil {
				return
			}
		}
	})
	px := respProxy(t, proxy.Config{}, up)
	client := respClient(t)
	const iterations = 15
	for i := range iterations {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var n atomic.Int32
		trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
			if n.Add(1) == int32(3+i) {
				cancel()
			}
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", px.URL()+"/", nil)
		res, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		cancel()
		px.waitFinished(t, int64(i+1))
	}
}

// TestStream100Then103: the upstream sends 100 Continue immediately
// followed by a 103 Early Hints. The client's 100 (net/http's own, written
// when the transport starts reading the body) and the relayed 103 are
// written from different goroutines; the client must see well-formed
// responses (100 and 103 in either order, then the final one) and the race
// detector nothing.
func TestStream100Then103(t *testing.T) {
	// Not parallel: a data race found here must be reported against this
	// test, not against whatever else runs at the time.
	up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for range 100 { // keep-alive
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	px := respProxy(t, proxy.Config{}, up)
	const iterations = 20
	for i := range iterations {
		c, br := respDial(t, px.Addr())
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		var codes []int
		for len(codes) < 4 {
			h, err := respReadHead(br)
			if err != nil {
				t.Fatalf("iteration %d after %v: %v", i, codes, err)
			}
			codes = append(codes, h.code)
			if h.code == http.StatusContinue {
				io.WriteString(c, "hello")
			}
			if h.code >= 200 {
				body, _, err := respReadBody(br, h, false)
				if h.code != 200 || string(body) != "hello" || err != nil {
					t.Fatalf("iteration %d: final %d %q %v", i, h.code, body, err)
				}
				break
			}
		}
		slices.Sort(codes)
		// BUG: net/http's automatic 100 Continue (written by
		// expectContinueReader.Read on the transport's writeLoop goroutine)
		// and the relayed 103 (informational.got -> WriteHeader on the
		// readLoop goroutine) write the connection's bufio.Writer without a
		// common lock: the race detector reports it, and without -race the
		// client sometimes reads a corrupted stream.
		if !slices.Equal(codes, []int{100, 103, 200}) {
			t.Fatalf("iteration %d: client got %v, want 100, 103 and 200", i, codes)
		}
		c.Close()
	}
}
