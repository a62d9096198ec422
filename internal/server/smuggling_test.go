package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// Issue 5, "Request smuggling and bad requests": raw bytes from a raw client
// through the stack `sluice proxy` runs (Serve in front of proxy.New), to a
// raw TCP upstream that records exactly the bytes it received. For every
// vector the test records the client's response statuses, whether the
// server closed the client connection, and the requests the upstream's
// bytes parse into (http.ReadRequest in a loop).
//
// The rule for every vector: sluice answers 4xx (and closes the client
// connection where framing was ambiguous) or normalises unambiguously; the
// upstream never sees a smuggled request (GET /admin in these vectors), and
// its bytes always parse as clean HTTP/1.1: CRLF line ends only, no
// obs-fold, no NUL or bare CR, nothing after the last request. After every
// vector a new connection must still be served.
//
// Vectors port behaviours (not code) from PortSwigger's request smuggling
// research, HTTP Garden's findings and Http11Probe's test pages; each has a
// comment naming its class. docs/reliability.md has the table.

// smugWait bounds every client read: no vector takes longer. smugSettle is
// how long the client waits for more after the responses it expected.
const (
	smugWait   = 2 * time.Second
	smugSettle = 500 * time.Millisecond
)

// smugCanned is the upstream's answer to every request. Its Connection
// field is hop-by-hop and names X-Upstream-Hop: neither may reach the
// client, and neither may undo a "Connection: close" the server decided on.
const smugCanned = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Upstream-Hop\r\nX-Upstream-Hop: 1\r\n\r\nok"

// smugUpstream is a raw TCP upstream on loopback. It answers every request
// it reads with smugCanned (after a 100 Continue when asked) and records
// everything it reads off each connection, byte for byte.
type smugUpstream struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]*bytes.Buffer
	order []*bytes.Buffer
}

func startSmugUpstream(t *testing.T) *smugUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &smugUpstream{ln: ln, conns: map[net.Conn]*bytes.Buffer{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rec := new(bytes.Buffer)
			u.mu.Lock()
			u.conns[c] = rec
			u.order = append(u.order, rec)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c, rec)
			}()
		}
	}()
	return u
}

// smugRecorder appends to one connection's record under the upstream's lock.
type smugRecorder struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w smugRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (u *smugUpstream) serve(c net.Conn, rec *bytes.Buffer) {
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, smugRecorder{&u.mu, rec}))
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if _, err := io.WriteString(c, smugCanned); err != nil {
			return
		}
	}
}

// close stops the upstream and returns the bytes each connection received,
// in the order the connections were accepted.
func (u *smugUpstream) close() []string {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	out := make([]string, len(u.order))
	for i, b := range u.order {
		out[i] = b.String()
	}
	return out
}

// smugStack is the whole server, built as cmd/sluice's `proxy` command
// builds it with its default flags: Serve + proxy.New + proxy.NewTransport
// in front of one upstream.
type smugStack struct {
	addr    string
	up      *smugUpstream // nil when the upstream refuses connections
	tr      *proxy.Transport
	pool    *upstream.Pool
	cancel  context.CancelFunc
	done    chan error
	tls     *tls.Config // set: the client speaks TLS
	stopped bool
}

func startSmugStack(t *testing.T, refused bool, o Options) *smugStack {
	t.Helper()
	s := &smugStack{done: make(chan error, 1)}
	var upAddr string
	if refused {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		upAddr = ln.Addr().String()
		ln.Close() // nothing listens there any more: dials are refused
	} else {
		s.up = startSmugUpstream(t)
		upAddr = s.up.ln.Addr().String()
	}
	quiet := slog.New(slog.DiscardHandler)
	s.tr = proxy.NewTransport(proxy.TransportOptions{DialTimeout: 3 * time.Second, ResponseHeaderTimeout: 60 * time.Second})
	s.pool = upstream.NewPool(nil, upstream.New(upAddr))
	h, err := proxy.New(proxy.Config{
		Upstreams:        s.pool,
		Transport:        s.tr,
		Retry:            proxy.RetryPolicy{Retries: 2, TryDuration: 10 * time.Second},
		MaxRequestBuffer: proxy.DefaultMaxRequestBuffer,
		Logger:           quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	o.Logger = quiet
	go func() { s.done <- Serve(ctx, ln, h, o) }()
	t.Cleanup(func() {
		if !s.stopped { // the test failed before it stopped the stack
			s.stop(t)
		}
	})
	return s
}

// stop shuts the server down, closes the transport's idle connections and
// the upstream, and returns what the upstream received.
func (s *smugStack) stop(t *testing.T) []string {
	t.Helper()
	s.stopped = true
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Serve did not return within 10s of cancel")
	}
	s.tr.CloseIdleConnections()
	s.pool.Close()
	if s.up == nil {
		return nil
	}
	return s.up.close()
}

// smugResult is what one vector did.
type smugResult struct {
	interim   []int // 1xx statuses the client received
	statuses  []int // final statuses, in order
	responses []*http.Response
	closed    bool   // the server closed the connection after the responses
	clientErr string // set when the client got bytes that are not a response
	reqs      []*smugRequest
	upErr     string // set when the upstream's bytes are not clean HTTP/1.1
}

// smugRequest is one request as the upstream received it.
type smugRequest struct {
	method, target, host string
	header               http.Header
	body                 string
	chunked              bool
}

// exchange writes raw on a new connection and reads responses until the
// server closes the connection or stays quiet: for smugWait while fewer than
// want final responses arrived, for smugSettle after that (a server that
// closes does so right after its last response). after, if set, is written
// once the first final response has been read.
func (s *smugStack) exchange(t *testing.T, raw, after string, want int) *smugResult {
	t.Helper()
	var conn net.Conn
	var err error
	if s.tls != nil {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: smugWait}, "tcp", s.addr, s.tls)
	} else {
		conn, err = net.DialTimeout("tcp", s.addr, smugWait)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var writes sync.WaitGroup
	write := func(b string) {
		writes.Add(1)
		go func() {
			defer writes.Done()
			// The server may answer (431) and close before reading all.
			_ = conn.SetWriteDeadline(time.Now().Add(smugWait))
			_, _ = io.WriteString(conn, b)
		}()
	}
	defer writes.Wait()
	write(raw)

	r := new(smugResult)
	br := bufio.NewReader(conn)
	for {
		wait := smugWait
		if len(r.statuses) >= want {
			wait = smugSettle
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
				r.closed = true
			case errors.Is(err, os.ErrDeadlineExceeded):
				if br.Buffered() > 0 {
					r.clientErr = "partial response: " + err.Error()
				}
			default:
				r.clientErr = err.Error()
			}
			return r
		}
		if res.StatusCode < 200 {
			r.interim = append(r.interim, res.StatusCode)
			continue
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		r.statuses = append(r.statuses, res.StatusCode)
		r.responses = append(r.responses, res)
		if err != nil {
			r.clientErr = "reading a response body: " + err.Error()
			return r
		}
		if after != "" {
			write(after)
			after = ""
		}
	}
}

// smugParse splits what the upstream received into requests.
func smugParse(conns []string) (reqs []*smugRequest, problem string) {
	for i, raw := range conns {
		if p := smugCheckWire(raw); p != "" {
			return reqs, "connection " + strconv.Itoa(i+1) + ": " + p
		}
		br := bufio.NewReader(strings.NewReader(raw))
		for {
			if _, err := br.Peek(1); err == io.EOF {
				break
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				return reqs, "connection " + strconv.Itoa(i+1) + ": unparsable bytes: " + err.Error()
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return reqs, "connection " + strconv.Itoa(i+1) + ": body: " + err.Error()
			}
			reqs = append(reqs, &smugRequest{
				method: req.Method, target: req.RequestURI, host: req.Host,
				header: req.Header, body: string(b), chunked: len(req.TransferEncoding) > 0,
			})
		}
	}
	return reqs, ""
}

// smugCheckWire reports bytes a clean HTTP/1.1 message head never has. The
// vectors keep bare LF, CR and NUL out of the bodies they forward, so the
// whole stream can be checked.
func smugCheckWire(raw string) string {
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '\n':
			if i == 0 || raw[i-1] != '\r' {
				return "bare LF at byte " + strconv.Itoa(i)
			}
			if i+1 < len(raw) && (raw[i+1] == ' ' || raw[i+1] == '\t') {
				return "obs-fold at byte " + strconv.Itoa(i)
			}
		case '\r':
			if i+1 >= len(raw) || raw[i+1] != '\n' {
				return "bare CR at byte " + strconv.Itoa(i)
			}
		case 0:
			return "NUL at byte " + strconv.Itoa(i)
		}
	}
	return ""
}

// smugFollowup is the liveness request sent on a new connection after every
// vector; it is not counted as one of the vector's upstream requests.
const smugFollowup = "/followup-liveness"

// smugConn is what a vector requires of the client connection.
type smugConn int

const (
	smugEither smugConn = iota
	smugClose           // closed after the response(s)
	smugKeep            // a clean request: the connection stays open
)

type smugVector struct {
	name     string
	raw      string
	after    string // sent once the first final response arrived
	refused  bool   // the upstream refuses connections
	status   []int  // final statuses the client must get, in order
	conn     smugConn
	upstream int // requests that must reach the upstream
	check    func(t *testing.T, r *smugResult)
}

// Building blocks of the vectors.
const (
	smugHost   = "Host: sluice.test\r\n"
	smugGET    = "GET / HTTP/1.1\r\n" + smugHost + "\r\n"
	smugAdmin  = "GET /admin HTTP/1.1\r\n" + smugHost + "\r\n" // the smuggled request
	smugUpWS   = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	smugH2CUpg = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)

// smugChunkedPOST is a chunked POST head followed by body.
func smugChunkedPOST(body string) string {
	return "POST / HTTP/1.1\r\n" + smugHost + "Transfer-Encoding: chunked\r\n\r\n" + body
}

func smugLen(s string) string { return strconv.Itoa(len(s)) }
func smugHex(s string) string { return strconv.FormatInt(int64(len(s)), 16) }

// smugBody checks the body of the upstream's first request.
func smugBody(body string) func(t *testing.T, r *smugResult) {
	return func(t *testing.T, r *smugResult) {
		t.Helper()
		if got := r.reqs[0].body; got != body {
			t.Errorf("upstream body %q, want %q", got, body)
		}
	}
}

// smugTarget checks the request-target the upstream received, byte for byte.
func smugTarget(target string) func(t *testing.T, r *smugResult) {
	return func(t *testing.T, r *smugResult) {
		t.Helper()
		if got := r.reqs[0].target; got != target {
			t.Errorf("upstream target %q, want %q (byte-exact: nothing decoded or cleaned)", got, target)
		}
	}
}

func smugVectors() []smugVector {
	a := func(n int) string { return strings.Repeat("a", n) }
	return []smugVector{
		// Baseline: a clean request keeps its connection.
		{name: "plain GET", raw: smugGET, status: []int{200}, conn: smugKeep, upstream: 1},
		// Pipelining (Http11Probe pipeline tests): both answered in order,
		// the upstream sees exactly two.
		{name: "two pipelined GETs", raw: smugGET + "GET /second HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: func(t *testing.T, r *smugResult) {
				if r.reqs[0].target != "/" || r.reqs[1].target != "/second" {
					t.Errorf("upstream got %q then %q", r.reqs[0].target, r.reqs[1].target)
				}
			}},

		// CL.TE (PortSwigger 2019; Http11Probe SMUG-CLTE-*): a CL front end
		// forwards all the bytes as one body; a TE back end ends the body at
		// "0" and would read GET /admin as the next request.
		{name: "CL.TE with a smuggled GET after the last chunk", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Content-Length: " + smugLen("0\r\n\r\n"+smugAdmin) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("")},
		// TE.CL (PortSwigger 2019; Http11Probe SMUG-TECL-*): a CL back end
		// reads 4 bytes and would take the chunk data for a request.
		{name: "TE.CL with a smuggled GET inside the chunk", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + smugHex(smugAdmin) + "\r\n" + smugAdmin + "\r\n0\r\n\r\n",
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody(smugAdmin)},
		// CL.TE, headers the other way round.
		{name: "TE then CL with a smuggled GET after the body", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		// CL.TE where CL is not even a number (HTTP Garden: Go #65505).
		{name: "TE with an invalid CL", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		// Chunked alone is legal, but net/http would hide a CL next to it:
		// every chunked request closes, and what follows is never read.
		{name: "chunked body then a pipelined GET", raw: smugChunkedPOST("3\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		{name: "chunked body with a trailer", raw: smugChunkedPOST("3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n") + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		// A broken trailer section (golang.org/issue/12027): the bytes after
		// the bad line must never be read as the next request.
		{name: "malformed trailer line before a request", raw: smugChunkedPOST("3\r\nabc\r\n0\r\nX-T: y\r\nno colon here\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		// Framing fields in the trailer section (RFC 9110 §6.5.1).
		{name: "chunked body with Content-Length in the trailer", raw: smugChunkedPOST("3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n") + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},

		// TE.TE obfuscation (PortSwigger; Http11Probe SMUG-TE-*; HTTP
		// Garden: ",chunked" forwarded by nghttpx): only exactly "chunked"
		// is accepted.
		{name: "TE chunked, identity", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "TE identity, chunked", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "two TE lines", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "two TE lines both chunked", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "TE leading comma", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "TE space before colon", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "TE tab before the value", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		{name: "TE tab inside the value", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: chun\tked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "TE vertical tab", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: \vchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "TE upper case", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		{name: "TE gzip", raw: "POST / HTTP/1.1\r\n" + smugHost + "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
			status: []int{501}, conn: smugClose, upstream: 0},
		{name: "TE xchunked", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{501}, conn: smugClose, upstream: 0},
		// obs-fold in TE: net/http unfolds it to "chunked" (RFC 9112 §5.2
		// allows replacing obs-fold with SP); then the chunked rule applies.
		{name: "TE value obs-folded", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("")},
		{name: "TE name with a NUL", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Transfer-Encoding\x00: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		// A bare LF ends a field line (RFC 9112 §2.2 MAY): a front end that
		// does not split there sees one X-A field; we see TE, so chunked.
		{name: "bare LF inside a header value starts a TE field", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if r.reqs[0].header.Get("X-A") != "b" || r.reqs[0].body != "" {
					t.Errorf("upstream got X-A %q, body %q", r.reqs[0].header.Get("X-A"), r.reqs[0].body)
				}
			}},

		// CL.CL (RFC 9110 §8.6; HTTP Garden: empty CL Go #61679, HAProxy
		// CVE-2023-40225; "+"/"_" accepted by CPython, Gunicorn, AIOHTTP).
		{name: "two CL lines with different values", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "two CL lines with the same value", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + smugGET,
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: func(t *testing.T, r *smugResult) {
				if r.reqs[0].body != "hello" || len(r.reqs[0].header["Content-Length"]) != 1 {
					t.Errorf("upstream got body %q with Content-Length %q", r.reqs[0].body, r.reqs[0].header["Content-Length"])
				}
			}},
		{name: "CL list 5, 5", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5, 5\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL +5", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: +5\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL -1", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: -1\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL 0x5", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 0x5\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL 5_0", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5_0\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL empty", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: \r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL beyond int64", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 99999999999999999999\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "CL space before colon", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length : 5\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		// Leading zeros and trailing OWS are valid: forwarded as a plain CL.
		{name: "CL leading zeros", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 0005\r\n\r\nhello" + smugGET,
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: func(t *testing.T, r *smugResult) {
				if r.reqs[0].body != "hello" || r.reqs[0].header.Get("Content-Length") != "5" {
					t.Errorf("upstream got body %q with Content-Length %q", r.reqs[0].body, r.reqs[0].header.Get("Content-Length"))
				}
			}},
		{name: "CL trailing whitespace", raw: "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5 \t\r\n\r\nhello" + smugGET,
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: smugBody("hello")},
		// GET with a body is legal and keeps its length.
		{name: "GET with a CL body", raw: "GET / HTTP/1.1\r\n" + smugHost + "Content-Length: 5\r\n\r\nhello" + smugGET,
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: smugBody("hello")},
		// CL.0 (PortSwigger 2022): the back end ignores a GET's body and
		// reads it as a request. The upstream gets it with its length.
		{name: "GET whose CL body is a request", raw: "GET / HTTP/1.1\r\n" + smugHost +
			"Content-Length: " + smugLen(smugAdmin) + "\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugKeep, upstream: 1, check: smugBody(smugAdmin)},
		// Hop-by-hop abuse + CL.0 (Davison): "Connection: Content-Length"
		// must not make the next hop see a body without a length.
		{name: "Connection names Content-Length", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Connection: Content-Length\r\nContent-Length: " + smugLen(smugAdmin) + "\r\n\r\n" + smugAdmin,
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if q := r.reqs[0]; q.body != smugAdmin || q.header.Get("Content-Length") != smugLen(smugAdmin) {
					t.Errorf("upstream got body %q with Content-Length %q", q.body, q.header.Get("Content-Length"))
				}
			}},

		// Chunk-size and chunk-extension abuse ("Funky Chunks" TERM.EXT /
		// EXT.TERM; CVE-2025-22871 bare LF; CVE-2023-39326 extension bloat;
		// HTTP Garden: empty chunk size, Go #64517).
		{name: "chunk size not hex", raw: smugChunkedPOST("g\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size negative", raw: smugChunkedPOST("-3\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size of 17 hex digits", raw: smugChunkedPOST("10000000000000003\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size empty", raw: smugChunkedPOST("\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size with 0x", raw: smugChunkedPOST("0x3\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size with +", raw: smugChunkedPOST("+3\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size with _", raw: smugChunkedPOST("0_3\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size with leading zeros", raw: smugChunkedPOST("0003\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		{name: "chunk data longer than its size", raw: smugChunkedPOST("3\r\nabcdef\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk size line ending in bare LF", raw: smugChunkedPOST("3\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk data ending in bare LF", raw: smugChunkedPOST("3\r\nabc\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk extension ending in bare LF", raw: smugChunkedPOST("3;x\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk extension with a bare CR", raw: smugChunkedPOST("3;x\ry\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk extension with a quoted string", raw: smugChunkedPOST("3;name=\"quoted;value\"\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("abc")},
		{name: "chunk extension of 8 KiB", raw: smugChunkedPOST("3;x="+a(8<<10)+"\r\nabc\r\n0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "chunk extension bloat", raw: smugChunkedPOST(strings.Repeat("1;x="+a(4000)+"\r\na\r\n", 64)+"0\r\n\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "last chunk without its final CRLF", raw: smugChunkedPOST("3\r\nabc\r\n0\r\n") + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},

		// obs-fold (RFC 9112 §5.2): net/http replaces it with SP, which the
		// RFC allows; the upstream never sees a fold.
		{name: "obs-fold with a space", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-Folded: a\r\n b\r\n\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if v := r.reqs[0].header.Get("X-Folded"); v != "a b" {
					t.Errorf("upstream got X-Folded %q, want %q", v, "a b")
				}
			}},
		{name: "obs-fold with a tab", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-Folded: a\r\n\tb\r\n\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if v := r.reqs[0].header.Get("X-Folded"); v != "a b" {
					t.Errorf("upstream got X-Folded %q, want %q", v, "a b")
				}
			}},
		{name: "fold right after the request line", raw: "GET / HTTP/1.1\r\n Host: sluice.test\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},

		// Bare LF, bare CR, control bytes (RFC 9112 §2.2; HTTP Garden).
		// Bare LF line ends are accepted (MAY) and sent on as CRLF.
		{name: "bare LF line ends", raw: "GET / HTTP/1.1\nHost: sluice.test\nX-A: b\n\n",
			status: []int{200}, conn: smugKeep, upstream: 1},
		{name: "bare CR in the request line", raw: "GET / HTTP/1.1\rHost: sluice.test\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "bare CR in a header value", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-A: b\rc\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "bare CR line ends", raw: "GET / HTTP/1.1\rHost: sluice.test\r\r\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "NUL in a header value", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-A: b\x00c\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "NUL in the target", raw: "GET /a\x00b HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "header name with a space", raw: "GET / HTTP/1.1\r\n" + smugHost + "X A: b\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "empty header name", raw: "GET / HTTP/1.1\r\n" + smugHost + ": b\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "header line without a colon", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-A b\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "very long header name", raw: "GET / HTTP/1.1\r\n" + smugHost + "X-" + a(16<<10) + ": b\r\n\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1},

		// Limits (Http11Probe MAL-*): 431, then other connections are
		// served (checked after every vector).
		{name: "oversized request line", raw: "GET /" + a(80<<10) + " HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{431}, conn: smugClose, upstream: 0},
		{name: "oversized header block", raw: "GET / HTTP/1.1\r\n" + smugHost + strings.Repeat("X-Pad: "+a(1000)+"\r\n", 80) + "\r\n",
			status: []int{431}, conn: smugClose, upstream: 0},

		// Request line (Http11Probe COMP-*, MAL-*).
		{name: "space in the method", raw: "GE T / HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "space in the target", raw: "GET /a b HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "two spaces after the method", raw: "GET  / HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "tab between method and target", raw: "GET\t/ HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "HTTP/0.9 request", raw: "GET /\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "lower-case version", raw: "GET / http/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "HTTP/2.0 in an HTTP/1 request line", raw: "GET / HTTP/2.0\r\n" + smugHost + "\r\n",
			status: []int{505}, conn: smugClose, upstream: 0},
		{name: "version with a leading zero", raw: "GET / HTTP/01.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		// Any 1.x is served as 1.1 (RFC 9110 §2.5) and sent on as 1.1.
		{name: "HTTP/1.2", raw: "GET / HTTP/1.2\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1},
		{name: "empty line before the request line", raw: "\r\n" + smugGET,
			status: []int{400}, conn: smugClose, upstream: 0},

		// Host (RFC 9112 §3.2; PortSwigger Host header attacks).
		{name: "missing Host", raw: "GET / HTTP/1.1\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "two Host headers", raw: "GET / HTTP/1.1\r\n" + smugHost + "Host: other.test\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "Host with a path", raw: "GET / HTTP/1.1\r\nHost: sluice.test/admin\r\n\r\n",
			status: []int{400}, conn: smugClose, upstream: 0},
		// Absolute-form (RFC 9112 §3.2.2): the target's authority wins and
		// replaces Host; the upstream gets origin-form and Host = that
		// authority, the same host the proxy saw and logged.
		{name: "absolute-form with a different Host", raw: "GET http://other.example/x?q=1 HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				q := r.reqs[0]
				if q.target != "/x?q=1" || q.host != "other.example" || q.header.Get("X-Forwarded-Host") != "other.example" {
					t.Errorf("upstream got target %q, Host %q, X-Forwarded-Host %q; want /x?q=1, other.example twice",
						q.target, q.host, q.header.Get("X-Forwarded-Host"))
				}
			}},
		{name: "absolute-form with userinfo", raw: "GET http://user:pw@other.example/x HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if q := r.reqs[0]; q.target != "/x" || q.host != "other.example" {
					t.Errorf("upstream got target %q, Host %q", q.target, q.host)
				}
			}},
		{name: "absolute-form with a non-http scheme", raw: "GET ftp://other.example/x HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugKeep, upstream: 0},
		{name: "authority-form outside CONNECT", raw: "GET other.example:80 HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{400}, conn: smugKeep, upstream: 0},

		// Path confusion (research §3.9): sluice has no path routing yet, so
		// the rule is byte-exact forwarding: nothing decoded, nothing
		// cleaned, what the access log shows is what the upstream gets.
		{name: "dot-dot segments", raw: "GET /static/../secret HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: smugTarget("/static/../secret")},
		{name: "encoded dot-dot segments", raw: "GET /static/%2e%2e/secret HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: smugTarget("/static/%2e%2e/secret")},
		{name: "encoded slash, backslash and mixed-case escapes", raw: "GET /a%2Fb/%2E%2e%5c/c;x=1?p=%2e HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: smugTarget("/a%2Fb/%2E%2e%5c/c;x=1?p=%2e")},
		{name: "double slash", raw: "GET //internal/x HTTP/1.1\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: smugTarget("//internal/x")},

		// h2c upgrade smuggling (Bishop Fox; Go #80416): never a tunnel.
		{name: "Upgrade h2c with HTTP2-Settings", raw: "GET / HTTP/1.1\r\n" + smugHost + smugH2CUpg + "\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				h := r.reqs[0].header
				if h.Get("Upgrade") != "" || h.Get("Http2-Settings") != "" || h.Get("Connection") != "" {
					t.Errorf("upstream got Upgrade %q, HTTP2-Settings %q, Connection %q", h.Get("Upgrade"), h.Get("Http2-Settings"), h.Get("Connection"))
				}
			}},
		// Upgrade with a chunked body (websocket smuggling, 0ang3el): a 101
		// would drop the Connection: close and tunnel the bytes after the
		// body to the upstream. Refused.
		{name: "Upgrade websocket with a chunked body", raw: "GET / HTTP/1.1\r\n" + smugHost + smugUpWS +
			"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},
		{name: "Upgrade h2c with a chunked body", raw: "POST / HTTP/1.1\r\n" + smugHost + smugH2CUpg +
			"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smugAdmin,
			status: []int{400}, conn: smugClose, upstream: 0},

		// Hop-by-hop abuse (Davison; CVE-2021-33197; Go #50580): the
		// proxy's own forwarded headers still reach the upstream, Host
		// cannot be removed; Authorization, named by the client, is
		// dropped as the client asked (RFC 9110 §7.6.1).
		{name: "Connection names X-Forwarded-*, Authorization and Host", raw: "GET / HTTP/1.1\r\n" + smugHost +
			"Connection: keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Authorization, Host\r\n" +
			"Authorization: Bearer t\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
			status: []int{200}, conn: smugKeep, upstream: 1, check: func(t *testing.T, r *smugResult) {
				q := r.reqs[0]
				if q.host != "sluice.test" || q.header.Get("X-Forwarded-For") != "127.0.0.1" ||
					q.header.Get("X-Forwarded-Proto") != "http" || q.header.Get("X-Forwarded-Host") != "sluice.test" {
					t.Errorf("upstream got Host %q, X-Forwarded-For %q, -Proto %q, -Host %q", q.host,
						q.header.Get("X-Forwarded-For"), q.header.Get("X-Forwarded-Proto"), q.header.Get("X-Forwarded-Host"))
				}
				if q.header.Get("Authorization") != "" || q.header.Get("Connection") != "" {
					t.Errorf("upstream got Authorization %q, Connection %q", q.header.Get("Authorization"), q.header.Get("Connection"))
				}
			}},

		// Expect-based desync (PortSwigger 2025 "HTTP/1.1 must die";
		// CVE-2024-24791). The upstream refuses: 502 and no 100, so the
		// client may still send the body; it must be discarded, never
		// read as a request.
		{name: "Expect 100-continue, upstream refuses, body sent after the answer", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Expect: 100-continue\r\nContent-Length: " + smugLen(smugAdmin) + "\r\n\r\n",
			after: smugAdmin, refused: true, status: []int{502}, conn: smugClose, upstream: 0, check: func(t *testing.T, r *smugResult) {
				if len(r.interim) != 0 {
					t.Errorf("client got %v before the 502: no 100 Continue for a body nobody reads", r.interim)
				}
			}},
		{name: "Expect 100-continue with the body sent at once", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello" + smugGET,
			status: []int{200, 200}, conn: smugKeep, upstream: 2, check: smugBody("hello")},
		{name: "Expect with an unknown expectation", raw: "POST / HTTP/1.1\r\n" + smugHost +
			"Expect: 101-switch\r\nContent-Length: 5\r\n\r\nhello",
			status: []int{417}, conn: smugClose, upstream: 0},

		// HTTP/1.0 (RFC 9112 §6.1: Transfer-Encoding in 1.0 is faulty
		// framing). net/http drops TE on 1.0 and frames by CL: a TE front
		// end would forward chunk data holding a request. Every 1.0 request
		// with a body closes its connection.
		{name: "HTTP/1.0 keep-alive with TE and CL", raw: "POST / HTTP/1.0\r\n" + smugHost +
			"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
			smugHex(smugAdmin) + "\r\n" + smugAdmin + "\r\n0\r\n\r\n",
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody(smugHex(smugAdmin) + "\r\n")},
		// Without CL the body is empty and the chunk-size line that follows
		// is not a request: 400 and close.
		{name: "HTTP/1.0 keep-alive with TE only", raw: "POST / HTTP/1.0\r\n" + smugHost +
			"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smugHex(smugAdmin) + "\r\n" + smugAdmin + "\r\n0\r\n\r\n",
			status: []int{200, 400}, conn: smugClose, upstream: 1, check: smugBody("")},
		{name: "HTTP/1.0 keep-alive POST with CL then a GET", raw: "POST / HTTP/1.0\r\n" + smugHost +
			"Connection: keep-alive\r\nContent-Length: 5\r\n\r\nhello" + "GET /admin HTTP/1.0\r\n" + smugHost + "\r\n",
			status: []int{200}, conn: smugClose, upstream: 1, check: smugBody("hello")},
		{name: "HTTP/1.0 keep-alive GETs", raw: "GET / HTTP/1.0\r\n" + smugHost + "Connection: keep-alive\r\n\r\n" +
			"GET /second HTTP/1.0\r\n" + smugHost + "\r\n",
			status: []int{200, 200}, conn: smugClose, upstream: 2},
		{name: "HTTP/1.0 upgrade with a CL body", raw: "POST / HTTP/1.0\r\n" + smugHost + smugUpWS + "Content-Length: 5\r\n\r\nhello",
			status: []int{400}, conn: smugClose, upstream: 0},
		// RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0
		// request.
		{name: "HTTP/1.0 upgrade", raw: "GET / HTTP/1.0\r\n" + smugHost + smugUpWS + "\r\n",
			status: []int{200}, conn: smugClose, upstream: 1, check: func(t *testing.T, r *smugResult) {
				if up := r.reqs[0].header.Get("Upgrade"); up != "" {
					// Regression (bug found here, fixed in
					// proxy/prepare.go): Upgrade was forwarded
					// whatever the client's version, so a 101 would
					// tunnel to an HTTP/1.0 client.
					t.Errorf("the upstream got Upgrade %q from an HTTP/1.0 request (RFC 9110 §7.8: ignore it)", up)
				}
			}},
	}
}

func TestSmuggling(t *testing.T) {
	dump := os.Getenv("SLUICE_SMUGGLING_DUMP") != ""
	for _, v := range smugVectors() {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			s := startSmugStack(t, v.refused, Options{})
			r := s.exchange(t, v.raw, v.after, len(v.status))
			if !v.refused {
				f := s.exchange(t, "GET "+smugFollowup+" HTTP/1.1\r\n"+smugHost+"Connection: close\r\n\r\n", "", 1)
				if len(f.statuses) != 1 || f.statuses[0] != 200 {
					t.Errorf("the server stopped serving other connections: a new GET got %v %s", f.statuses, f.clientErr)
				}
			}
			reqs, problem := smugParse(s.stop(t))
			r.upErr = problem
			for _, q := range reqs {
				if q.target != smugFollowup {
					r.reqs = append(r.reqs, q)
				}
			}
			if dump {
				var got []string
				for _, q := range r.reqs {
					got = append(got, q.method+" "+q.target+" Host="+q.host+" body="+strconv.Quote(q.body))
				}
				t.Logf("statuses %v, 1xx %v, closed %v, client error %q; upstream %q %s",
					r.statuses, r.interim, r.closed, r.clientErr, got, r.upErr)
			}

			if r.clientErr != "" {
				t.Errorf("the client got something that is not a response: %s", r.clientErr)
			}
			if r.upErr != "" {
				t.Errorf("the upstream's bytes are not clean HTTP/1.1: %s", r.upErr)
			}
			for _, q := range r.reqs {
				if strings.HasPrefix(q.target, "/admin") {
					t.Errorf("SMUGGLED: the upstream received %s %s", q.method, q.target)
				}
				if q.chunked && q.header.Get("Content-Length") != "" {
					t.Errorf("the upstream got both chunked and Content-Length")
				}
			}
			for i, res := range r.responses {
				conn := res.Header.Values("Connection")
				if res.Header.Get("X-Upstream-Hop") != "" || strings.Contains(strings.ToLower(strings.Join(conn, ",")), "x-upstream-hop") {
					t.Errorf("response %d carries the upstream's hop-by-hop fields: Connection %q", i+1, conn)
				}
				last := i == len(r.responses)-1
				if last && v.conn == smugClose && res.ProtoAtLeast(1, 1) && !res.Close {
					t.Errorf("the last response says Connection %q; a connection that closes says close", conn)
				}
			}
			if !slices.Equal(r.statuses, v.status) {
				t.Errorf("the client got statuses %v, want %v", r.statuses, v.status)
			}
			switch {
			case v.conn == smugClose && !r.closed:
				t.Errorf("the client connection stayed open; it must be closed after the response")
			case v.conn == smugKeep && r.closed:
				t.Errorf("the client connection was closed; a clean request keeps it")
			}
			if len(r.reqs) != v.upstream {
				t.Errorf("the upstream received %d requests, want %d", len(r.reqs), v.upstream)
			} else if v.check != nil && (len(r.reqs) > 0 || v.upstream == 0) {
				v.check(t, r)
			}
		})
	}
}

// TestSmugglingOverTLS: the close rule needs no look at raw bytes, so it
// holds under TLS, where nothing but the parser sees them.
func TestSmugglingOverTLS(t *testing.T) {
	cert, key, roots := selfSigned(t)
	s := startSmugStack(t, false, Options{TLSCert: cert, TLSKey: key})
	s.tls = &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}

	raw := "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: " + smugLen("0\r\n\r\n"+smugAdmin) +
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smugAdmin
	r := s.exchange(t, raw, "", 1)
	reqs, problem := smugParse(s.stop(t))
	if !slices.Equal(r.statuses, []int{200}) || !r.closed || len(r.responses) != 1 || !r.responses[0].Close {
		t.Errorf("CL.TE over TLS: statuses %v, closed %v; want [200] with Connection: close, then closed", r.statuses, r.closed)
	}
	if problem != "" || len(reqs) != 1 || reqs[0].target != "/" {
		t.Errorf("the upstream got %d requests (%s)", len(reqs), problem)
	}
}

// smugWriter is a ResponseWriter that allocates nothing.
type smugWriter struct {
	h    http.Header
	code int
}

func (w *smugWriter) Header() http.Header         { return w.h }
func (w *smugWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *smugWriter) WriteHeader(code int)        { w.code = code }

func smugReq(t testing.TB, proto string, raw string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if proto == "HTTP/2.0" {
		r.Proto, r.ProtoMajor, r.ProtoMinor = proto, 2, 0
	}
	return r
}

// TestSmugglingGuardRules checks the guard on its own, HTTP/2 included
// (its framing has no CL/TE ambiguity: nothing to do there).
func TestSmugglingGuardRules(t *testing.T) {
	for _, tc := range []struct {
		name, proto, raw string
		close            bool
		status           int // 0: passed on to the handler
	}{
		{"plain GET", "", smugGET, false, 0},
		{"CL body", "", "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5\r\n\r\nhello", false, 0},
		{"chunked body", "", smugChunkedPOST("0\r\n\r\n"), true, 0},
		{"HTTP/1.0 GET", "", "GET / HTTP/1.0\r\n\r\n", false, 0},
		{"HTTP/1.0 CL body", "", "POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", true, 0},
		{"HTTP/1.0 with TE", "", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", true, 0},
		{"upgrade without a body", "", "GET / HTTP/1.1\r\n" + smugHost + smugUpWS + "\r\n", false, 0},
		{"upgrade with a CL body", "", "POST / HTTP/1.1\r\n" + smugHost + smugUpWS + "Content-Length: 5\r\n\r\nhello", false, 0},
		{"upgrade with a chunked body", "", "POST / HTTP/1.1\r\n" + smugHost + smugUpWS + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true, 400},
		{"Upgrade field without Connection: upgrade", "", "POST / HTTP/1.1\r\n" + smugHost + "Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true, 0},
		{"HTTP/2 request with a body", "HTTP/2.0", "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5\r\n\r\nhello", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := smugReq(t, tc.proto, tc.raw)
			if tc.proto == "HTTP/2.0" {
				r.ContentLength = -1 // h2 without content-length
			}
			called := false
			g := newSmugglingGuard(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }), slog.New(slog.DiscardHandler))
			w := &smugWriter{h: make(http.Header)}
			g.ServeHTTP(w, r)
			if got := w.h.Get("Connection") == "close"; got != tc.close {
				t.Errorf("Connection: close set = %v, want %v", got, tc.close)
			}
			if called != (tc.status == 0) || w.code != tc.status {
				t.Errorf("handler called %v, status %d; want status %d", called, w.code, tc.status)
			}
		})
	}
}

// TestSmugglingGuardAllocs: the guard is on every request; a plain GET
// (and a Content-Length body) costs it nothing.
func TestSmugglingGuardAllocs(t *testing.T) {
	g := newSmugglingGuard(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), slog.New(slog.DiscardHandler))
	w := &smugWriter{h: make(http.Header)}
	for _, raw := range []string{smugGET, "POST / HTTP/1.1\r\n" + smugHost + "Content-Length: 5\r\n\r\nhello"} {
		r := smugReq(t, "", raw)
		if n := testing.AllocsPerRun(1000, func() { g.ServeHTTP(w, r) }); n != 0 {
			t.Errorf("%q: the guard allocates %.1f times per request, want 0", strings.SplitN(raw, "\r\n", 2)[0], n)
		}
	}
}

func BenchmarkSmugglingGuard(b *testing.B) {
	g := newSmugglingGuard(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), slog.New(slog.DiscardHandler))
	w := &smugWriter{h: make(http.Header)}
	r := smugReq(b, "", smugGET)
	b.ReportAllocs()
	for b.Loop() {
		g.ServeHTTP(w, r)
	}
}
