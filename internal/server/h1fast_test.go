package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http/httpguts"
)

// The fast HTTP/1.1 loop (h1serve.go) against net/http's HTTP/1 server:
// parseHead differentially against http.ReadRequest (FuzzParseHead), the
// bytes on the wire for the same handler under both (TestH1FastWireParity),
// and the loop's own duties on real loopback sockets: pipelining, hand-off
// to net/http, the lazily started client watch, unread bodies, panics and
// shutdown. Clients are raw net.Conns so every byte is seen.

// h1Mode is one way Serve runs HTTP/1.1 on plain TCP.
type h1Mode struct {
	name string
	o    Options
}

// h1Modes: the fast loop (the default) and net/http's server.
var h1Modes = []h1Mode{
	{"fast", Options{}},
	{"std", Options{StdHTTP1: true}},
}

// fastMode starts a subtest for mode m: the fast mode is skipped when
// SLUICE_TEST_STDSERVER turned the fast loop off for the whole package
// (export_test.go), since it would only repeat the std one.
func fastMode(t *testing.T, m h1Mode) {
	t.Helper()
	if m.name == "fast" && forceStdHTTP1 {
		t.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off")
	}
}

// servedBy is the X-Served-By (markServer) a request the fast loop keeps
// gets: "fast", or "std" when SLUICE_TEST_STDSERVER turned the loop off.
func servedBy() string {
	if forceStdHTTP1 {
		return "std"
	}
	return "fast"
}

// h1Wait bounds every client read and write in these tests.
const h1Wait = 10 * time.Second

// dialH1 opens a raw client connection, closed when the test ends.
func dialH1(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(h1Wait))
	t.Cleanup(func() { c.Close() })
	return c
}

func h1IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readH1Response reads one response (after any 1xx) to a request with the
// given method, and its whole body.
func readH1Response(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	for {
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading the response to %s: %v", method, err)
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("reading the body of %s %s: %v (got %q)", method, res.Status, err, b)
		}
		return res, string(b)
	}
}

// servedByFast reports whether w is (or wraps) the fast loop's writer.
func servedByFast(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(*h1writer); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// markServer sets X-Served-By: fast or std on every response of h.
func markServer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		by := "std"
		if servedByFast(w) {
			by = "fast"
		}
		w.Header().Set("X-Served-By", by)
		h.ServeHTTP(w, r)
	})
}

// echoHandler answers "METHOD URI PROTO len:body".
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %s %s %d:%s", r.Method, r.RequestURI, r.Proto, len(b), b)
	})
}

// ---------------------------------------------------------------------------
// 1. parseHead against net/http.

var parseHeadSeeds = []string{
	// Typical.
	"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
	"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
	"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n",
	"DELETE /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
	"OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\n",
	"PATCH /x HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n",
	"GET /favicon.ico HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip, deflate, br\r\nCookie: a=b; c=d\r\n" +
		"Sec-Fetch-Mode: no-cors\r\nReferer: http://localhost/\r\n\r\n",
	// Pipelined: the second request is not part of the head.
	"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
	// Repeated fields.
	"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\naccept: b\r\nACCEPT: c\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab",
	// Optional whitespace.
	"GET / HTTP/1.1\r\nHost:x\r\nX-A:   spaced   \r\nX-B:\ttabbed\t\r\nX-C:\r\nX-D: \t \r\n\r\n",
	"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
	" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-In: a  b\t c\r\n\r\n",
	// obs-text and control bytes.
	"GET / HTTP/1.1\r\nHost: x\r\nX-Obs: caf\xc3\xa9 \xff\x80\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\xff\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-Del: a\x7fb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-Vt: a\x0bb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX\xff: a\r\n\r\n",
	"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
	// obs-fold, bare CR and LF.
	"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n\tb\r\n\r\n",
	"GET / HTTP/1.1\nHost: x\n\n",
	"GET / HTTP/1.1\r\nHost: x\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
	// Content-Length variants.
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000000000000000000000005\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
	// Connection.
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: CLOSE\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Foo\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
	// Targets: parseTarget's fast way and the ones it leaves to net/url.
	"GET /a/b.c-d_e~f/$&+,:;=@ HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a? HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a?? HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a?b?c? HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a?q=%zz&r=%41#f HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /%41%2f%zz HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /!*'()[] HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a!b HTTP/1.1\r\nHost: x\r\n\r\n", // one byte EscapedPath encodes
	"GET /a%b HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET //x/y HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
	// Request lines.
	"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
	"GET / http/1.1\r\nHost: x\r\n\r\n",
	"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
	"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
	"get / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
	"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET //double/slash HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a%2Fb%00 HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a?b=%%%&c=;d HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a:b/c HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /..%2f../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"\r\n\r\n",
	// Host.
	"GET / HTTP/1.1\r\nHost: \r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: user@x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\"\r\n\r\n",
	"GET / HTTP/1.1\r\nX: y\r\n\r\n",
	// Fields the fast loop leaves to net/http, and odd names.
	"GET / HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nTrailer: X-Sum\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX_Under: 1\r\nx-lower-case: 2\r\n!#$%&'*+-.^_`|~: 3\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX:: double\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: tab\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: 1\r\n\r\n",
}

// manyFields is a head with n fields besides Host.
func manyFields(n int) string {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := range n {
		fmt.Fprintf(&b, "X-F%d: %d\r\n", i%7, i)
	}
	b.WriteString("\r\n")
	return b.String()
}

// FuzzParseHead: whenever parseHead accepts a head, net/http's parser
// accepts the same bytes and reads the same request from them, and
// net/http's server would not refuse it either (it validates more than
// http.ReadRequest). Only acceptance is checked against net/http: a head
// parseHead declines goes to net/http itself.
func FuzzParseHead(f *testing.F) {
	for _, s := range parseHeadSeeds {
		f.Add([]byte(s))
	}
	for _, n := range []int{maxFastHeaders - 2, maxFastHeaders - 1, maxFastHeaders, maxFastHeaders + 1} {
		f.Add([]byte(manyFields(n)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := headEnd(b)
		if n <= 0 {
			return
		}
		// headEnd's contract: the first CRLF CRLF, and no lone CR or LF
		// before it.
		if i := bytes.Index(b, []byte("\r\n\r\n")); i+4 != n {
			t.Fatalf("headEnd(%q) = %d, first CRLF CRLF ends at %d", b, n, i+4)
		}
		if bytes.Count(b[:n], []byte("\r")) != bytes.Count(b[:n], []byte("\n")) ||
			bytes.Count(b[:n], []byte("\r")) != bytes.Count(b[:n], []byte("\r\n")) {
			t.Fatalf("headEnd(%q) = %d over a lone CR or LF", b, n)
		}
		// Into a map a previous request used, as the loop does: nothing
		// of it may show.
		h, ok := parseHead(b[:n], http.Header{"Stale": {"x"}, "Host": {"old"}})
		if !ok {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("parseHead accepted %q; http.ReadRequest: %v", b[:n], err)
		}
		diff := func(what string, fast, std any) {
			t.Helper()
			if !reflect.DeepEqual(fast, std) {
				t.Errorf("%s: parseHead %#v, net/http %#v\nhead %q", what, fast, std, b[:n])
			}
		}
		diff("Method", h.method, req.Method)
		diff("Proto", "HTTP/1.1", req.Proto)
		diff("URL", h.url, *req.URL) // every field, parseTarget's fast way included
		diff("RequestURI", h.target, req.RequestURI)
		diff("Host", h.host, req.Host)
		diff("Header", h.header, req.Header)
		diff("ContentLength", h.contentLength, req.ContentLength)
		diff("Close", h.close, req.Close)
		diff("TransferEncoding", []string(nil), req.TransferEncoding)

		// What net/http's server checks beyond http.ReadRequest (see its
		// conn.readRequest): exactly one Host, a valid one, valid names
		// and values.
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b[:n])))
		if _, err := tp.ReadLine(); err != nil {
			t.Fatal(err)
		}
		mh, err := tp.ReadMIMEHeader()
		if err != nil {
			t.Fatalf("parseHead accepted %q; textproto: %v", b[:n], err)
		}
		if hosts := mh["Host"]; len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) {
			t.Errorf("parseHead accepted Host fields %q, which net/http's server refuses\nhead %q", hosts, b[:n])
		}
		if _, ok := h.header["Host"]; ok {
			t.Errorf("parseHead kept Host in the header map: %q", b[:n])
		}
		for k, vv := range h.header {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Errorf("parseHead accepted field name %q\nhead %q", k, b[:n])
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Errorf("parseHead accepted field value %q\nhead %q", v, b[:n])
				}
			}
		}
		if h.contentLength < 0 {
			t.Errorf("negative Content-Length %d from %q", h.contentLength, b[:n])
		}
	})
}

// ---------------------------------------------------------------------------
// 2. The same handler, the same request: the same bytes on the wire.

type wireCase struct {
	name   string
	method string // GET when empty
	extra  string // fields after Host, each ending in CRLF
	body   string // request body (Content-Length is added)
	h      func(w http.ResponseWriter, r *http.Request)
	// note is a known difference between the two servers that does
	// not matter to a client; the normalised responses may differ.
	note string
}

var longBody = strings.Repeat("0123456789abcdef", 3000/16+1)[:3000]

func wireCases() []wireCase {
	write := func(s string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) }
	}
	return []wireCase{
		{name: "empty", h: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "short-body", h: write("hello, world\n")},
		{name: "html-sniffed", h: write("<!DOCTYPE html><p>hi</p>")},
		{name: "long-body-chunked", h: write(longBody)},
		{name: "body-2048", h: write(longBody[:2048])},
		{name: "body-2049", h: write(longBody[:2049])},
		{name: "body-1000-then-1049", note: "chunk boundaries differ (net/http re-buffers to 2048-byte chunks); same body",
			h: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, longBody[:1000])
				io.WriteString(w, longBody[1000:2049])
			}},
		{name: "explicit-cl", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}},
		{name: "explicit-cl-long", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(longBody)))
			io.WriteString(w, longBody)
		}},
		{name: "explicit-cl-short-body", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
		}},
		{name: "invalid-handler-cl", note: "net/http chunks, the fast loop computes Content-Length: 5; both frame the same body",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "abc")
				io.WriteString(w, "hello")
			}},
		{name: "head-no-write", method: "HEAD", h: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "head-write", method: "HEAD", h: write("hello")},
		{name: "head-long-write", method: "HEAD", h: write(longBody),
			note: "the fast loop sends Content-Length: 3000 (the size GET would send), net/http no length; no body either way"},
		{name: "head-explicit-cl", method: "HEAD", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "42")
		}},
		{name: "204-with-cl", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "hello")
		}},
		{name: "304-with-cl-and-type", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
			io.WriteString(w, "hello")
		}},
		{name: "flush-first", h: func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			io.WriteString(w, "hello")
		}},
		{name: "controller-flush-first", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			io.WriteString(w, "data: 1\n\n")
		}},
		{name: "trailer-declared", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum, X-Count")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
			w.Header().Set("X-Sum", "5d41")
			w.Header().Set("X-Count", "1")
		}},
		{name: "trailer-declared-sniffed",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Sum")
				io.WriteString(w, "hello")
				w.Header().Set("X-Sum", "5d41")
			}},
		{name: "trailer-prefix-long", h: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, longBody)
			w.Header().Set(http.TrailerPrefix+"X-Sum", "abc")
		}},
		{name: "trailer-prefix-short",
			note: "net/http sends Content-Length: 5 and drops the trailer (its header went out without it); the fast loop chunks and sends it",
			h: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hello")
				w.Header().Set(http.TrailerPrefix+"X-Sum", "abc")
			}},
		{name: "early-hints", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Link", "</style.css>; rel=preload; as=style")
			w.Header().Set("Content-Length", "99") // never on a 1xx
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Content-Length")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
		}},
		{name: "handler-conn-close", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}},
		{name: "handler-conn-keep-alive", note: "net/http passes the handler's (meaningless on HTTP/1.1) Connection: keep-alive through, the fast loop drops it",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "keep-alive")
				io.WriteString(w, "hi")
			}},
		{name: "client-conn-close", extra: "Connection: close\r\n", h: write("bye")},
		{name: "invalid-fields", note: `CR LF in a value: net/http writes two spaces ("a  Injected"), the fast loop one; no injection either way`,
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Bad Name"] = []string{"x"}
				w.Header()["Bad:Name"] = []string{"x"}
				w.Header().Set("X-Split", "a\r\nInjected: yes")
				w.Header().Set("X-Lf", "b\nInjected: yes")
				io.WriteString(w, "ok")
			}},
		{name: "multi-value", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("X-Multi", "1")
			w.Header().Add("X-Multi", "2")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("X-Space", "  padded  ")
			io.WriteString(w, "ok")
		}},
		{name: "no-sniff", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>")
		}},
		{name: "content-encoding-no-sniff", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, "\x1f\x8b\x08\x00")
		}},
		{name: "te-identity", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "identity")
			io.WriteString(w, "hello")
		}},
		{name: "unknown-status", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(299)
			io.WriteString(w, "x")
		}},
		{name: "http-error", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			http.Error(w, "nope", http.StatusForbidden)
		}},
		{name: "post-read-body", method: "POST", body: "hello", h: func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(bytes.ToUpper(b))
		}},
		{name: "post-small-unread", method: "POST", body: "hello",
			note: "net/http reads a small unread body (< 256 KiB) and keeps the connection; the fast loop closes it (Connection: close): safe, costs a reconnect",
			h:    write("ok")},
		{name: "late-header",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				w.Header().Set("X-Late", "1")
				io.WriteString(w, "hello")
			}},
		// A Content-Length set after WriteHeader is ignored: one
		// Content-Length, never beside Transfer-Encoding.
		{name: "late-cl-same", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}},
		{name: "late-cl-other", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
		}},
		{name: "late-cl-chunked", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Content-Length", strconv.Itoa(len(longBody)))
			io.WriteString(w, longBody)
		}},
	}
}

// wireResult is what a client read in answer to one request.
type wireResult struct {
	raw  string // bytes of the response(s), Date fields removed
	norm string // status lines, sorted fields, decoded body, trailers, close
}

// wireExchange sends one request on a new connection and reads the
// response bytes by hand (http.ReadResponse would hide repeated fields).
// Whether the server kept the connection is learnt by asking again.
func wireExchange(t *testing.T, addr string, c wireCase) wireResult {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	req := method + " /" + c.name + " HTTP/1.1\r\nHost: sluice.test\r\n" + c.extra
	if c.body != "" {
		req += "Content-Length: " + strconv.Itoa(len(c.body)) + "\r\n"
	}
	req += "\r\n" + c.body
	conn := dialH1(t, addr)
	var rec bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &rec))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	var norm strings.Builder
	closeDelimited := readWireResponse(br, method == http.MethodHead, &norm)
	raw := rec.String()[:rec.Len()-br.Buffered()]
	if br.Buffered() > 0 {
		fmt.Fprintf(&norm, "extra bytes after the response: %q\n", rec.String()[len(raw):])
	}
	// Still open? A second request tells.
	closed := closeDelimited
	if !closed {
		io.WriteString(conn, "GET /probe HTTP/1.1\r\nHost: sluice.test\r\n\r\n")
		line, err := br.ReadString('\n')
		closed = err != nil
		if !closed && !strings.HasPrefix(line, "HTTP/1.1 200 ") {
			fmt.Fprintf(&norm, "probe answered %q\n", line)
		}
	}
	fmt.Fprintf(&norm, "connection closed after the response: %v\n", closed)
	return wireResult{raw: stripDate(raw), norm: norm.String()}
}

// readWireResponse reads one response and any 1xx before it from br,
// writing a normalised form to out; it reports whether the body was
// delimited by the connection's close.
func readWireResponse(br *bufio.Reader, head bool, out *strings.Builder) (closeDelimited bool) {
	for {
		status, err := br.ReadString('\n')
		if err != nil {
			fmt.Fprintf(out, "no response: %v (%q)\n", err, status)
			return true
		}
		out.WriteString(strings.TrimRight(status, "\r\n") + "\n")
		code := 0
		if f := strings.Fields(status); len(f) > 1 {
			code, _ = strconv.Atoi(f[1])
		}
		fields, err := readWireFields(br)
		if err != nil {
			fmt.Fprintf(out, "bad header: %v\n", err)
			return true
		}
		writeSorted(out, fields)
		if code >= 100 && code < 200 {
			continue
		}
		var cls []string
		chunked := false
		for _, f := range fields {
			k, v, _ := strings.Cut(f, ":")
			switch http.CanonicalHeaderKey(k) {
			case "Content-Length":
				cls = append(cls, strings.TrimSpace(v))
			case "Transfer-Encoding":
				chunked = strings.EqualFold(strings.TrimSpace(v), "chunked")
			}
		}
		switch {
		case head || code == http.StatusNoContent || code == http.StatusNotModified:
			out.WriteString("no body\n")
		case chunked:
			body, trailers, err := readChunked(br)
			fmt.Fprintf(out, "chunked body %s\n", shortBody(body))
			if err != nil {
				fmt.Fprintf(out, "body error: %v\n", err)
				return true
			}
			out.WriteString("trailers:\n")
			writeSorted(out, trailers)
		case len(cls) > 0:
			n, _ := strconv.Atoi(cls[0])
			body := make([]byte, n)
			m, err := io.ReadFull(br, body)
			fmt.Fprintf(out, "body %s\n", shortBody(body[:m]))
			if err != nil {
				fmt.Fprintf(out, "body error: %v\n", err)
				return true
			}
		default:
			body, err := io.ReadAll(br)
			fmt.Fprintf(out, "close-delimited body %s (%v)\n", shortBody(body), err)
			return true
		}
		return false
	}
}

// readWireFields reads field lines up to the blank line, Date excepted.
func readWireFields(br *bufio.Reader) ([]string, error) {
	var fields []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fields, err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return fields, fmt.Errorf("line without CRLF: %q", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			return fields, nil
		}
		if strings.HasPrefix(line, "Date: ") {
			continue
		}
		fields = append(fields, line)
	}
}

func readChunked(br *bufio.Reader) (body []byte, trailers []string, err error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return body, nil, fmt.Errorf("chunk size: %w", err)
		}
		size, _, _ := strings.Cut(strings.TrimSuffix(line, "\r\n"), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n < 0 {
			return body, nil, fmt.Errorf("bad chunk size line %q", line)
		}
		if n == 0 {
			trailers, err := readWireFields(br)
			return body, trailers, err
		}
		chunk := make([]byte, n+2)
		m, err := io.ReadFull(br, chunk)
		if err != nil {
			return append(body, chunk[:m]...), nil, fmt.Errorf("chunk data: %w", err)
		}
		if string(chunk[n:]) != "\r\n" {
			return body, nil, fmt.Errorf("chunk not followed by CRLF")
		}
		body = append(body, chunk[:n]...)
	}
}

// writeSorted writes field lines sorted by name; lines of one name keep
// their order, which is the order that matters.
func writeSorted(out *strings.Builder, fields []string) {
	s := slices.Clone(fields)
	sort.SliceStable(s, func(i, j int) bool {
		ki, _, _ := strings.Cut(s[i], ":")
		kj, _, _ := strings.Cut(s[j], ":")
		return http.CanonicalHeaderKey(ki) < http.CanonicalHeaderKey(kj)
	})
	for _, f := range s {
		out.WriteString("  " + f + "\n")
	}
}

// shortBody quotes b, or for a long b its length and ends.
func shortBody(b []byte) string {
	if len(b) <= 64 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%d bytes %q...%q", len(b), b[:16], b[len(b)-16:])
}

// shortRaw is raw with runs of longBody's bytes cut out.
func shortRaw(raw string) string {
	return bodyRun.ReplaceAllStringFunc(raw, func(run string) string { return fmt.Sprintf("<%d body bytes>", len(run)) })
}

var bodyRun = regexp.MustCompile(`(?:0123456789abcdef){4,}`)

func stripDate(raw string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(raw, "\r\n") {
		if !strings.HasPrefix(line, "Date: ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestH1FastWireParity serves each case's handler through the fast loop
// and through net/http's server, with and without the slow-client
// watchdogs in between (without them the handler holds the fast loop's
// own writer, WriteString included), and compares what a client reads.
func TestH1FastWireParity(t *testing.T) {
	if forceStdHTTP1 {
		t.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off, nothing to compare")
	}
	cases := wireCases()
	mux := http.NewServeMux()
	for _, c := range cases {
		mux.HandleFunc("/"+c.name, c.h)
	}
	mux.HandleFunc("/probe", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "probe") })
	for _, wd := range []struct {
		name string
		o    Options
	}{
		{"watchdogs", Options{}},
		{"bare", Options{BodyReadTimeout: -1, WriteIdleTimeout: -1}},
	} {
		t.Run(wd.name, func(t *testing.T) {
			fastO, stdO := wd.o, wd.o
			stdO.StdHTTP1 = true
			fast := start(t, mux, fastO)
			std := start(t, mux, stdO)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					f := wireExchange(t, fast.addr, c)
					s := wireExchange(t, std.addr, c)
					switch {
					case f.norm != s.norm && c.note != "":
						t.Logf("known difference (%s):\nfast:\n%s\nstd:\n%s", c.note, f.norm, s.norm)
					case f.norm != s.norm:
						t.Errorf("responses differ\nfast:\n%s\nstd:\n%s\nfast raw: %q\nstd raw:  %q", f.norm, s.norm, shortRaw(f.raw), shortRaw(s.raw))
					case f.raw != s.raw:
						t.Logf("same fields and body, other order or chunking:\nfast raw: %q\nstd raw:  %q", shortRaw(f.raw), shortRaw(s.raw))
					}
				})
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 3. Pipelining.

func TestH1FastPipelining(t *testing.T) {
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			srv := start(t, markServer(echoHandler()), m.o)
			conn := dialH1(t, srv.addr)
			body := strings.Repeat("pipelined body ", 300) // crosses the read buffer
			io.WriteString(conn, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
				"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body+
				"GET /three?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(conn)
			for _, want := range []string{
				"GET /one HTTP/1.1 0:",
				"POST /two HTTP/1.1 " + strconv.Itoa(len(body)) + ":" + body,
				"GET /three?x=1 HTTP/1.1 0:",
			} {
				res, got := readH1Response(t, br, strings.Fields(want)[0])
				if res.StatusCode != 200 || got != want {
					t.Fatalf("got %s %q, want 200 %q", res.Status, got, want)
				}
				if by := res.Header.Get("X-Served-By"); by != m.name {
					t.Errorf("served by %s", by)
				}
			}
		})
	}
}

// TestH1FastFreshHeadersEachRequest: the fast loop reuses a connection's
// header maps (h1fastConn.reqHeader, respHeader). Nothing of one request's
// fields, nor of its response's, may show in the next one's, whether the
// maps were kept (few fields) or let go (more than maxReusedFields).
func TestH1FastFreshHeadersEachRequest(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k := range r.Header {
			names = append(names, k)
			w.Header().Set("Echo-"+k, r.Header.Get(k))
		}
		slices.Sort(names)
		io.WriteString(w, strings.Join(names, ","))
	})
	many := func(prefix string, n int) (fields string, names []string) {
		for i := range n {
			fields += fmt.Sprintf("%s%d: v\r\n", prefix, i)
			names = append(names, fmt.Sprintf("%s%d", prefix, i))
		}
		slices.Sort(names)
		return fields, names
	}
	manyFields, manyNames := many("X-Many-", maxReusedFields+8)
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			srv := start(t, h, m.o)
			conn := dialH1(t, srv.addr)
			br := bufio.NewReader(conn)
			for i, c := range []struct {
				fields string
				want   []string
			}{
				{"X-A: 1\r\nX-B: 2\r\n", []string{"X-A", "X-B"}},
				{"X-C: 3\r\n", []string{"X-C"}},
				{manyFields, manyNames},
				{"", nil},
				{"X-D: 4\r\n", []string{"X-D"}},
			} {
				io.WriteString(conn, "GET /"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: x\r\n"+c.fields+"\r\n")
				res, got := readH1Response(t, br, "GET")
				if want := strings.Join(c.want, ","); res.StatusCode != 200 || got != want {
					t.Fatalf("request %d: handler saw fields %q, want %q", i, got, want)
				}
				var echoed []string
				for k := range res.Header {
					if name, ok := strings.CutPrefix(k, "Echo-"); ok {
						echoed = append(echoed, name)
					}
				}
				slices.Sort(echoed)
				if !slices.Equal(echoed, c.want) {
					t.Fatalf("request %d: response carries Echo- fields for %q, want %q", i, echoed, c.want)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 4. Hand-off to net/http.

func TestH1FastHandOff(t *testing.T) {
	srv := start(t, markServer(echoHandler()), Options{H2C: true})

	type want struct {
		proto, by, body string
		close           bool
	}
	check := func(t *testing.T, res *http.Response, body string, w want) {
		t.Helper()
		if res.StatusCode != 200 || res.Proto != w.proto || body != w.body ||
			res.Header.Get("X-Served-By") != w.by || res.Close != w.close {
			t.Fatalf("got %s %s by %q close=%v body %q; want %s by %s close=%v body %q",
				res.Proto, res.Status, res.Header.Get("X-Served-By"), res.Close, body, w.proto, w.by, w.close, w.body)
		}
	}
	t.Run("chunked", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		res, body := readH1Response(t, bufio.NewReader(conn), "POST")
		// The smuggling guard closes after every chunked request.
		check(t, res, body, want{"HTTP/1.1", "std", "POST /up HTTP/1.1 11:hello world", true})
	})
	t.Run("http1.0", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		io.WriteString(conn, "GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		res, body := readH1Response(t, br, "GET")
		check(t, res, body, want{"HTTP/1.0", "std", "GET /old HTTP/1.0 0:", true})
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("HTTP/1.0 connection left open")
		}
	})
	t.Run("expect-100-continue", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		io.WriteString(conn, "POST /exp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusContinue {
			t.Fatalf("got %s before the body, want 100 Continue", res.Status)
		}
		io.WriteString(conn, "hello")
		res, body := readH1Response(t, br, "POST")
		check(t, res, body, want{"HTTP/1.1", "std", "POST /exp HTTP/1.1 5:hello", false})
	})
	t.Run("oversized-head", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		br := bufio.NewReader(conn)
		// The whole connection is net/http's from the first request on,
		// the small second request too.
		for i, value := range []string{strings.Repeat("b", 5000), "small"} {
			io.WriteString(conn, "GET /big"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: x\r\nX-Big: "+value+"\r\n\r\n")
			res, body := readH1Response(t, br, "GET")
			check(t, res, body, want{"HTTP/1.1", "std", "GET /big" + strconv.Itoa(i) + " HTTP/1.1 0:", false})
		}
	})
	t.Run("h2c-prior-knowledge", func(t *testing.T) {
		c, tr := h2cClient()
		defer tr.CloseIdleConnections()
		res, body := get(t, c, "http://"+srv.addr+"/h2")
		if res.StatusCode != 200 || res.ProtoMajor != 2 || body != "GET /h2 HTTP/2.0 0:" {
			t.Fatalf("got %s %s %q", res.Proto, res.Status, body)
		}
	})
	t.Run("lowercase-method", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		io.WriteString(conn, "get /lower HTTP/1.1\r\nHost: x\r\n\r\n")
		res, body := readH1Response(t, bufio.NewReader(conn), "get")
		check(t, res, body, want{"HTTP/1.1", "std", "get /lower HTTP/1.1 0:", false})
	})

	// The second request on a kept-alive connection is chunked.
	second := "POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	wantSecond := want{"HTTP/1.1", "std", "POST /second HTTP/1.1 3:abc", true}
	t.Run("second-chunked", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		br := bufio.NewReader(conn)
		io.WriteString(conn, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		res, body := readH1Response(t, br, "GET")
		check(t, res, body, want{"HTTP/1.1", servedBy(), "GET /first HTTP/1.1 0:", false})
		io.WriteString(conn, second)
		res, body = readH1Response(t, br, "POST")
		check(t, res, body, wantSecond)
	})
	t.Run("second-chunked-pipelined", func(t *testing.T) {
		conn := dialH1(t, srv.addr)
		br := bufio.NewReader(conn)
		io.WriteString(conn, "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"+second)
		res, body := readH1Response(t, br, "POST")
		check(t, res, body, want{"HTTP/1.1", servedBy(), "POST /first HTTP/1.1 2:hi", false})
		res, body = readH1Response(t, br, "POST")
		check(t, res, body, wantSecond)
	})
}

// TestH1FastHandOffAfterClientWatch: the second request comes while the
// first handler watches its context, so the client watch's background
// read may hold the second request's first byte when the connection is
// handed off.
func TestH1FastHandOffAfterClientWatch(t *testing.T) {
	release := make(chan struct{})
	watching := make(chan struct{}, 1)
	h := markServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/watch" {
			done := r.Context().Done()
			watching <- struct{}{}
			select {
			case <-release:
			case <-done:
				http.Error(w, "cancelled", http.StatusInternalServerError)
				return
			case <-time.After(5 * time.Second):
			}
		}
		echoHandler().ServeHTTP(w, r)
	}))
	srv := start(t, h, Options{})
	for _, second := range []string{
		"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		conn := dialH1(t, srv.addr)
		br := bufio.NewReader(conn)
		io.WriteString(conn, "GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case <-watching:
		case <-time.After(h1Wait):
			t.Fatal("handler not reached")
		}
		io.WriteString(conn, second)
		time.Sleep(50 * time.Millisecond) // let the background read take a byte
		select {
		case release <- struct{}{}:
		case <-time.After(h1Wait):
			t.Fatal("handler gave up before it was released")
		}
		res, body := readH1Response(t, br, "GET")
		if res.StatusCode != 200 || body != "GET /watch HTTP/1.1 0:" || res.Header.Get("X-Served-By") != servedBy() {
			t.Fatalf("first: %s by %s %q", res.Status, res.Header.Get("X-Served-By"), body)
		}
		method := strings.Fields(second)[0]
		res, body = readH1Response(t, br, method)
		wantBody, wantBy := "POST /second HTTP/1.1 3:abc", "std"
		if method == "GET" {
			wantBody, wantBy = "GET /second HTTP/1.1 0:", servedBy()
		}
		if res.StatusCode != 200 || body != wantBody || res.Header.Get("X-Served-By") != wantBy {
			t.Fatalf("second: %s by %s %q, want %q by %s", res.Status, res.Header.Get("X-Served-By"), body, wantBody, wantBy)
		}
	}
}

// ---------------------------------------------------------------------------
// 5. The client leaving cancels the context, once someone asked.

func TestH1FastClientGoneCancels(t *testing.T) {
	type variant struct {
		name string
		req  string
		// readBody: the handler reads the whole body, before (after,
		// with watchFirst) it starts watching with wait.
		readBody, watchFirst bool
		wait                 func(r *http.Request) <-chan struct{}
	}
	done := func(r *http.Request) <-chan struct{} { return r.Context().Done() }
	const get, post = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
	variants := []variant{
		{"get-done", get, false, false, done},
		{"post-read-then-done", post, true, false, done},
		// The watch starts when the body's last byte is read.
		{"post-done-then-read", post, true, true, done},
		{"get-afterfunc", get, false, false, func(r *http.Request) <-chan struct{} {
			ch := make(chan struct{})
			context.AfterFunc(r.Context(), func() { close(ch) })
			return ch
		}},
		{"get-child-context", get, false, false, func(r *http.Request) <-chan struct{} {
			ctx, cancel := context.WithCancel(r.Context())
			go func() { <-ctx.Done(); cancel() }()
			return ctx.Done()
		}},
	}
	for _, m := range h1Modes {
		for _, v := range variants {
			t.Run(m.name+"/"+v.name, func(t *testing.T) {
				fastMode(t, m)
				entered := make(chan struct{})
				got := make(chan time.Time, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					var ch <-chan struct{}
					if v.watchFirst {
						ch = v.wait(r)
					}
					if v.readBody {
						if b, err := io.ReadAll(r.Body); err != nil || string(b) != "hello" {
							t.Errorf("body %q, %v", b, err)
						}
					}
					if ch == nil {
						ch = v.wait(r)
					}
					close(entered)
					select {
					case <-ch:
						got <- time.Now()
					case <-time.After(5 * time.Second):
						got <- time.Time{}
					}
				})
				srv := start(t, h, m.o)
				conn := dialH1(t, srv.addr)
				io.WriteString(conn, v.req)
				select {
				case <-entered:
				case <-time.After(h1Wait):
					t.Fatal("handler not reached")
				}
				t0 := time.Now()
				conn.Close()
				at := <-got
				if at.IsZero() {
					t.Fatal("context not cancelled within 5s of the client leaving")
				}
				if d := at.Sub(t0); d > time.Second {
					t.Fatalf("context cancelled %v after the client left, want within 1s", d)
				}
			})
		}
	}
}

// TestH1FastNoCancelWithoutInterest: a handler that never asks for Done
// sees Err() == nil all along, even when the client leaves meanwhile (the
// fast loop watches the client only for those who ask); once the handler
// returned, the context is cancelled, as under net/http.
func TestH1FastNoCancelWithoutInterest(t *testing.T) {
	for _, m := range h1Modes {
		for _, leave := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/client-leaves=%v", m.name, leave), func(t *testing.T) {
				fastMode(t, m)
				entered := make(chan context.Context, 1)
				proceed := make(chan struct{})
				errs := make(chan []error, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctx := r.Context()
					var seen []error
					note := func() {
						if err := ctx.Err(); err != nil {
							seen = append(seen, err)
						}
					}
					note()
					entered <- ctx
					<-proceed
					for range 30 {
						note()
						time.Sleep(10 * time.Millisecond)
					}
					io.WriteString(w, "done")
					note()
					errs <- seen
				})
				srv := start(t, h, m.o)
				conn := dialH1(t, srv.addr)
				io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				var ctx context.Context
				select {
				case ctx = <-entered:
				case <-time.After(h1Wait):
					t.Fatal("handler not reached")
				}
				if leave {
					conn.Close()
					time.Sleep(50 * time.Millisecond)
				}
				close(proceed)
				seen := <-errs
				switch {
				case len(seen) > 0 && m.name == "fast":
					t.Errorf("Err() during the handler: %v", seen)
				case len(seen) > 0:
					t.Logf("net/http cancels without being asked: Err() during the handler: %v", seen[0])
				}
				if !leave {
					res, body := readH1Response(t, bufio.NewReader(conn), "GET")
					if res.StatusCode != 200 || body != "done" {
						t.Fatalf("got %s %q", res.Status, body)
					}
				}
				if !waitFor(5*time.Second, func() bool { return ctx.Err() != nil }) {
					t.Fatal("context not cancelled after the handler returned")
				}
			})
		}
	}
}

// ---------------------------------------------------------------------------
// 6. A large body the handler does not read.

func TestH1FastUnreadBody(t *testing.T) {
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			srv := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "not reading that")
			}), m.o)
			conn := dialH1(t, srv.addr)
			const size = 1 << 20
			wrote := make(chan error, 1)
			go func() {
				_, err := io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
				if err == nil {
					_, err = conn.Write(make([]byte, size))
				}
				wrote <- err
			}()
			br := bufio.NewReader(conn)
			res, body := readH1Response(t, br, "POST")
			// res.Close: "Connection: close" (ReadResponse removes the field).
			if res.StatusCode != 200 || body != "not reading that" || !res.Close {
				t.Fatalf("got %s close=%v body %q, want 200 with Connection: close", res.Status, res.Close, body)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := br.Read(make([]byte, 1)); err == nil || h1IsTimeout(err) {
				t.Fatalf("connection still open after the response: read %d, %v", n, err)
			}
			conn.Close()
			select {
			case <-wrote:
			case <-time.After(h1Wait):
				t.Fatal("client write still blocked after close")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 7. Panics.

func TestH1FastPanics(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, longBody)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/boom":
			panic("boom")
		case "/boom-after-short-write":
			io.WriteString(w, "looks complete")
			panic("boom")
		}
		io.WriteString(w, "ok")
	})
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			srv := start(t, h, m.o)

			t.Run("abort-mid-body", func(t *testing.T) {
				conn := dialH1(t, srv.addr)
				io.WriteString(conn, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
				raw, err := readUntilClosed(conn, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.HasSuffix(raw, []byte("\r\n0\r\n\r\n")) {
					t.Fatalf("aborted response ends like a complete one: %q", raw[max(0, len(raw)-40):])
				}
				res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(res.Body)
				if res.StatusCode != 200 || len(res.TransferEncoding) == 0 || !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != longBody {
					t.Fatalf("got %s TE %v, %d body bytes, %v; want a chunked body of %d bytes cut short",
						res.Status, res.TransferEncoding, len(b), err, len(longBody))
				}
			})
			for _, path := range []string{"/boom", "/boom-after-short-write"} {
				t.Run(path[1:], func(t *testing.T) {
					conn := dialH1(t, srv.addr)
					io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
					raw, err := readUntilClosed(conn, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if len(raw) > 0 {
						t.Fatalf("got %q, want the connection closed without a response", raw)
					}
				})
			}
			t.Run("still-serving", func(t *testing.T) {
				conn := dialH1(t, srv.addr)
				io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				res, body := readH1Response(t, bufio.NewReader(conn), "GET")
				if res.StatusCode != 200 || body != "ok" {
					t.Fatalf("got %s %q", res.Status, body)
				}
			})
		})
	}
}

// ---------------------------------------------------------------------------
// 8. Shutdown.

func TestH1FastShutdown(t *testing.T) {
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/block" {
					entered <- struct{}{}
					select {
					case <-release:
					case <-time.After(h1Wait):
					}
				}
				io.WriteString(w, "finished "+r.URL.Path)
			})
			o := m.o
			o.ShutdownTimeout = h1Wait
			srv := start(t, h, o)

			idle := dialH1(t, srv.addr)
			idleBr := bufio.NewReader(idle)
			io.WriteString(idle, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
			if res, body := readH1Response(t, idleBr, "GET"); res.StatusCode != 200 || res.Close || body != "finished /idle" {
				t.Fatalf("idle connection's request: %s close=%v %q", res.Status, res.Close, body)
			}
			busy := dialH1(t, srv.addr)
			io.WriteString(busy, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
			select {
			case <-entered:
			case <-time.After(h1Wait):
				t.Fatal("handler not reached")
			}

			srv.cancel()
			idle.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := idleBr.Read(make([]byte, 1)); err == nil || h1IsTimeout(err) {
				t.Fatalf("idle connection not closed at shutdown: read %d, %v", n, err)
			}
			select {
			case err := <-srv.done:
				t.Fatalf("Serve returned (%v) with a request in flight", err)
			default:
			}
			close(release)
			res, body := readH1Response(t, bufio.NewReader(busy), "GET")
			if res.StatusCode != 200 || body != "finished /block" || !res.Close {
				t.Fatalf("in-flight request: %s close=%v %q, want 200 with Connection: close", res.Status, res.Close, body)
			}
			if err := srv.stop(t); err != nil {
				t.Fatal(err)
			}
			idle.Close()
			busy.Close()
		})
	}
}

// TestH1FastShutdownTimeout: a handler that ignores its context and never
// finishes does not keep Serve from returning once ShutdownTimeout is up;
// net/http's Close leaves such a handler running and returns.
func TestH1FastShutdownTimeout(t *testing.T) {
	for _, m := range h1Modes {
		t.Run(m.name, func(t *testing.T) {
			fastMode(t, m)
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				select { // deaf to r.Context()
				case <-release:
				case <-time.After(30 * time.Second):
				}
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			o := m.o
			o.ShutdownTimeout = 300 * time.Millisecond
			o.Logger = slog.New(slog.DiscardHandler)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Serve(ctx, ln, h, o) }()
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			defer func() {
				unblock()
				select {
				case <-done:
				case <-time.After(h1Wait):
					t.Error("Serve did not return even after the handler did")
				}
			}()
			conn := dialH1(t, ln.Addr().String())
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			select {
			case <-entered:
			case <-time.After(h1Wait):
				t.Fatal("handler not reached")
			}
			t0 := time.Now()
			cancel()
			select {
			case err := <-done:
				done <- err // for the deferred wait
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("Serve returned %v after cancel with a 300ms grace", time.Since(t0).Round(time.Millisecond))
			case <-time.After(5 * time.Second):
				unblock()
				t.Fatal("Serve still running 5s after cancel with a 300ms ShutdownTimeout")
			}
			// The client's connection was closed.
			if _, err := readUntilClosed(conn, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 9. What a small GET costs.

// BenchmarkFastLoopSmallGET drives kept-alive GETs over one raw connection
// with a handler that writes two bytes. The client allocates nothing, so
// allocs/op are the server's (and the runtime's). std is net/http's HTTP/1
// server for comparison.
func BenchmarkFastLoopSmallGET(b *testing.B) {
	for _, m := range h1Modes {
		b.Run(m.name, func(b *testing.B) {
			if m.name == "fast" && forceStdHTTP1 {
				b.Skip("SLUICE_TEST_STDSERVER=1: the fast loop is off")
			}
			roundTrip := smallGETClient(b, m.o)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
		})
	}
}

// smallGETClient serves a handler answering "ok" with o and returns a
// function that sends one keep-alive GET over a raw connection and reads
// its response, allocating nothing on the client's side.
func smallGETClient(tb testing.TB, o Options) func() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, o) }()
	tb.Cleanup(func() { cancel(); <-done })
	conn := dialH1(tb, ln.Addr().String())
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	// The response has the same length every time (Date's is fixed):
	// learn it once.
	conn.Write(req)
	br := bufio.NewReader(conn)
	res, body := readH1Response(tb, br, "GET")
	if res.StatusCode != 200 || body != "ok" {
		tb.Fatalf("%s %q", res.Status, body)
	}
	n := len("HTTP/1.1 200 OK\r\n\r\nok")
	for k, v := range res.Header {
		n += len(k) + 2 + len(v[0]) + 2
	}
	buf := make([]byte, n)
	return func() {
		if _, err := conn.Write(req); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			tb.Fatal(err)
		}
		if buf[n-2] != 'o' || buf[n-1] != 'k' {
			tb.Fatalf("response out of step: %q", buf)
		}
	}
}
