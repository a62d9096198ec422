package proxy_test

// Response side of the round trip: header hygiene, trailers, bodiless
// statuses, body copy and its failures, error mapping before headers.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
)

// TestRespHopByHopHeadersStripped: the proxy removes the fixed hop-by-hop
// response headers and every header named in any Connection line (several
// lines, one of them empty), keeps a header literally named "Trailers", and
// keeps multi-value headers and Set-Cookie lines in order. Raw upstream and
// raw client, so nothing in net/http hides a header.
func TestRespHopByHopHeadersStripped(t *testing.T) {
	t.Parallel()
	const upResp = "HTTP/1.1 200 OK\r\n" +
		"Connection: X-A, keep-alive\r\n" +
		"Connection: \r\n" +
		"Connection: x-b\r\n" +
		"Keep-Alive: timeout=5, max=100\r\n" +
		"Proxy-Authenticate: Basic realm=\"up\"\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Upgrade: h2c\r\n" +
		"X-A: secret-a\r\n" +
		"X-B: secret-b\r\n" +
		"Trailers: kept\r\n" +
		"X-Multi: one\r\n" +
		"X-Other: o\r\n" +
		"X-Multi: two\r\n" +
		"Set-Cookie: a=1; Path=/\r\n" +
		"Set-Cookie: b=2\r\n" +
		"Set-Cookie: c=3; HttpOnly\r\n" +
		"X-List: p, q\r\n" +
		"Content-Type: text/plain\r\n" +
		"Content-Length: 5\r\n" +
		"\r\n" +
		"hello"
	px := respProxy(t, proxy.Config{}, respRawUpstream(t, respServeRaw(upResp)))
	c, br := respDial(t, px.Addr())
	if _, err := io.WriteString(c, "GET /h HTTP/1.1\r\nHost: example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	h, err := respReadHead(br)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := respReadBody(br, h, false)
	if err != nil {
		t.Fatal(err)
	}
	if h.code != 200 || string(body) != "hello" {
		t.Fatalf("got %d %q, want 200 \"hello\"", h.code, body)
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection",
		"Upgrade", "X-A", "X-B", "Transfer-Encoding"} {
		if v, ok := h.header[k]; ok {
			t.Errorf("hop-by-hop header %s: %q reached the client", k, v)
		}
	}
	want := map[string][]string{
		"Trailers":       {"kept"},
		"X-Multi":        {"one", "two"},
		"X-Other":        {"o"},
		"Set-Cookie":     {"a=1; Path=/", "b=2", "c=3; HttpOnly"},
		"X-List":         {"p, q"},
		"Content-Length": {"5"},
	}
	for k, v := range want {
		if got := h.header[k]; !slices.Equal(got, v) {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

// TestRespTransferEncodingNotCopied: an upstream's chunked framing (even one
// that also sends a conflicting Content-Length) is re-framed by the proxy: the
// client sees exactly one Transfer-Encoding: chunked line (the proxy's own)
// and no Content-Length beside it, and the exact body.
func TestRespTransferEncodingNotCopied(t *testing.T) {
	t.Parallel()
	const upResp = "HTTP/1.1 200 OK\r\n" +
		"Transfer-Encoding: chunked\r\n" +
		"Content-Length: 999\r\n" +
		"X-Keep: yes\r\n" +
		"\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
	px := respProxy(t, proxy.Config{}, respRawUpstream(t, respServeRaw(upResp)))
	c, br := respDial(t, px.Addr())
	for i := range 2 { // twice on one connection: framing must stay in sync
		if _, err := io.WriteString(c, "GET /te HTTP/1.1\r\nHost: example.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		h, err := respReadHead(br)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if te := h.header["Transfer-Encoding"]; len(te) > 1 {
			t.Fatalf("Transfer-Encoding sent %d times: %q", len(te), te)
		}
		if _, te := h.header["Transfer-Encoding"]; te && h.header.Get("Content-Length") != "" {
			t.Fatalf("both Transfer-Encoding and Content-Length sent: %v", h.header)
		}
		if h.header.Get("X-Keep") != "yes" {
			t.Errorf("end-to-end header X-Keep lost: %v", h.header)
		}
		body, _, err := respReadBody(br, h, false)
		if err != nil || string(body) != "hello world" {
			t.Fatalf("request %d: body %q, %v; want \"hello world\"", i, body, err)
		}
	}
}

// TestRespTrailers: announced and unannounced upstream trailers reach a Go
// client (res.Trailer after the body), with and without a body.
func TestRespTrailers(t *testing.T) {
	t.Parallel()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.URL.Query().Get("body")
		switch r.URL.Path {
		case "/announced":
			w.Header().Set("Trailer", "X-Checksum, X-Count")
			io.WriteString(w, body)
			w.Header().Set("X-Checksum", "abc")
			w.Header().Set("X-Count", "2")
		case "/unannounced":
			io.WriteString(w, body)
			// Flush so the upstream itself uses chunked framing (else
			// net/http computes a Content-Length and drops the trailer).
			http.NewResponseController(w).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/mixed":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, body)
			http.NewResponseController(w).Flush()
			w.Header().Set("X-Checksum", "abc")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}
	}))
	t.Cleanup(be.Close)
	px := newProxy(t, proxy.Config{}, be)
	client := respClient(t)

	cases := []struct {
		path string
		want map[string]string
	}{
		{"/announced", map[string]string{"X-Checksum": "abc", "X-Count": "2"}},
		{"/unannounced", map[string]string{"X-Late": "late"}},
		{"/mixed", map[string]string{"X-Checksum": "abc", "X-Late": "late"}},
	}
	for _, tc := range cases {
		for _, body := range []string{"payload", ""} {
			t.Run(fmt.Sprintf("%s/body=%q", tc.path[1:], body), func(t *testing.T) {
				res, err := client.Get(px.URL + tc.path + "?body=" + body)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || string(got) != body {
					t.Fatalf("body %q, %v; want %q", got, err, body)
				}
				for k, v := range tc.want {
					if res.Trailer.Get(k) != v {
						// BUG: (unannounced, empty body) the proxy writes its
						// header before it knows about unannounced trailers and
						// writes no body byte, so net/http sends
						// "Content-Length: 0" and silently drops the trailers.
						t.Errorf("trailer %s = %q, want %q (trailers %v, Content-Length %d, TE %v)",
							k, res.Trailer.Get(k), v, res.Trailer, res.ContentLength, res.TransferEncoding)
					}
				}
			})
		}
	}
}

// TestRespBodilessStatuses: HEAD keeps the upstream's Content-Length and
// sends no body; 204 and 304 carry no body and no chunked framing. Each is
// followed by a second request on the same raw connection, which only parses
// if no stray body byte or chunk terminator was sent.
func TestRespBodilessStatuses(t *testing.T) {
	t.Parallel()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
			w.Header().Set("X-Head", "1")
			if r.Method != http.MethodHead {
				w.Write(bytes.Repeat([]byte("x"), 1234))
			}
		case "/204":
			w.Header().Set("X-St", "204")
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		case "/next":
			io.WriteString(w, "next")
		}
	}))
	t.Cleanup(be.Close)
	px := newProxy(t, proxy.Config{}, be)
	host := strings.TrimPrefix(px.URL, "http://")

	cases := []struct {
		name, method, path string
		code               int
		check              func(t *testing.T, h respHead)
	}{
		{"HEAD", "HEAD", "/head", 200, func(t *testing.T, h respHead) {
			if h.header.Get("Content-Length") != "1234" || h.header.Get("X-Head") != "1" {
				t.Errorf("HEAD headers %v, want Content-Length: 1234 and X-Head: 1", h.header)
			}
		}},
		{"204", "GET", "/204", 204, func(t *testing.T, h respHead) {
			if h.header.Get("X-St") != "204" {
				t.Errorf("204 headers %v, want X-St: 204", h.header)
			}
		}},
		{"304", "GET", "/304", 304, func(t *testing.T, h respHead) {
			if h.header.Get("ETag") != `"v1"` {
				t.Errorf("304 headers %v, want ETag", h.header)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := respDial(t, host)
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nIf-None-Match: \"v1\"\r\n\r\n", tc.method, tc.path, host)
			h, err := respReadHead(br)
			if err != nil {
				t.Fatal(err)
			}
			if h.code != tc.code {
				t.Fatalf("status %d, want %d", h.code, tc.code)
			}
			if te, ok := h.header["Transfer-Encoding"]; ok {
				t.Errorf("Transfer-Encoding %q on a bodiless response", te)
			}
			if tc.code != 200 && h.header.Get("Content-Length") != "" && h.header.Get("Content-Length") != "0" {
				t.Errorf("Content-Length %q on %d", h.header.Get("Content-Length"), tc.code)
			}
			tc.check(t, h)
			// The next response on this connection must start right here.
			fmt.Fprintf(c, "GET /next HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			h2, err := respReadHead(br)
			if err != nil {
				t.Fatalf("second response on the connection: %v (stray body bytes after %s?)", err, tc.name)
			}
			body, _, err := respReadBody(br, h2, false)
			if h2.code != 200 || string(body) != "next" || err != nil {
				t.Fatalf("second response %d %q %v", h2.code, body, err)
			}
		})
	}
}

// TestRespLargeDownloadSHA256: 64 MiB with a Content-Length arrive byte-exact.
func TestRespLargeDownloadSHA256(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	block := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	rng.Read(block)
	// Vary each block so a repeated or dropped block changes the sum.
	gen := func(w io.Writer) [32]byte {
		h := sha256.New()
		mw := io.MultiWriter(w, h)
		b := make([]byte, len(block))
		for i := range size / len(block) {
			copy(b, block)
			b[0], b[1] = byte(i), byte(i>>8)
			if _, err := mw.Write(b); err != nil {
				break
			}
		}
		return [32]byte(h.Sum(nil))
	}
	want := gen(io.Discard)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Content-Type", "application/octet-stream")
		gen(w)
	}))
	t.Cleanup(be.Close)
	px := newProxy(t, proxy.Config{}, be)
	res, err := respClient(t).Get(px.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ContentLength != size {
		t.Errorf("Content-Length %d, want %d", res.ContentLength, size)
	}
	h := sha256.New()
	n, err := io.Copy(h, res.Body)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	if got := [32]byte(h.Sum(nil)); got != want {
		t.Fatalf("sha256 mismatch: got %x want %x", got, want)
	}
}

// TestRespUpstreamDiesMidBody: when the upstream breaks after its headers,
// the client gets an error, never a clean short body, and the proxy logs the
// failure at error level.
func TestRespUpstreamDiesMidBody(t *testing.T) {
	t.Parallel()
	half := strings.Repeat("a", 500)
	cases := []struct {
		name, resp string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + half},
		{"content-length-no-body-byte", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"},
		{"chunked-no-final-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n" + half + "\r\n"},
		{"chunked-mid-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + half},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := respReadRequest(br); err == nil {
					io.WriteString(c, tc.resp)
				}
				// returning closes the connection mid-body
			})
			px := respProxy(t, proxy.Config{}, up)

			// Go client: an error, not a clean short body.
			res, err := respClient(t).Get(px.URL() + "/x")
			if err == nil {
				body, rerr := io.ReadAll(res.Body)
				res.Body.Close()
				if rerr == nil {
					t.Fatalf("client read a clean %d-byte body (status %d); want an error", len(body), res.StatusCode)
				}
				if !errors.Is(rerr, io.ErrUnexpectedEOF) {
					t.Logf("client error %v (not ErrUnexpectedEOF, still an error)", rerr)
				}
			}

			// Raw client: never a complete chunked stream or full length.
			c, br := respDial(t, px.Addr())
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
			if h, err := respReadHead(br); err == nil {
				body, _, err := respReadBody(br, h, false)
				if err == nil {
					t.Fatalf("raw client read a complete %d-byte body with framing %v; want truncation", len(body), h.header)
				}
				rest, _ := io.ReadAll(br)
				if bytes.Contains(rest, []byte("0\r\n\r\n")) {
					t.Fatalf("final chunk sent after truncation")
				}
			}

			px.waitFinished(t, 2)
			logs := px.logs.String()
			if strings.Count(logs, "level=ERROR") < 2 || !strings.Contains(logs, "upstream response body broke") {
				t.Fatalf("want the broken body logged at error level twice, logs:\n%s", logs)
			}
		})
	}
}

// TestRespClientDisconnectCancelsUpstream: a client that goes away
// mid-download cancels the upstream request within a second, and it is not
// logged as an upstream error.
func TestRespClientDisconnectCancelsUpstream(t *testing.T) {
	t.Parallel()
	for _, knownLength := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%v", knownLength), func(t *testing.T) {
			t.Parallel()
			gone := make(chan time.Time, 1)
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if knownLength {
					w.Header().Set("Content-Length", strconv.Itoa(1<<40))
				}
				rc := http.NewResponseController(w)
				chunk := bytes.Repeat([]byte("z"), 32<<10)
				stop := time.After(respIOTimeout)
				for range 1 << 20 { // bounded in count and by stop
					select {
					case <-r.Context().Done():
						respSend(gone, time.Now())
						return
					case <-stop:
						return
					default:
					}
					if _, err := w.Write(chunk); err != nil {
						respSend(gone, time.Now())
						return
					}
					if err := rc.Flush(); err != nil {
						respSend(gone, time.Now())
						return
					}
				}
			}))
			t.Cleanup(be.Close)
			px := respProxy(t, proxy.Config{}, respAddr(be))
			c, br := respDial(t, px.Addr())
			io.WriteString(c, "GET /endless HTTP/1.1\r\nHost: example.test\r\n\r\n")
			if _, err := respReadHead(br); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(br, make([]byte, 256<<10)); err != nil {
				t.Fatal(err)
			}
			closed := time.Now()
			c.Close()
			select {
			case at := <-gone:
				if d := at.Sub(closed); d > time.Second {
					t.Fatalf("upstream saw the cancellation %v after the client left; want < 1s", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("upstream request not cancelled 3s after the client left")
			}
			px.waitFinished(t, 1)
			if logs := px.logs.String(); strings.Contains(logs, "level=ERROR") {
				t.Fatalf("client going away logged at error level:\n%s", logs)
			}
		})
	}
}

// TestRespHangupBeforeHeaders502: an upstream that hangs up (or sends
// garbage) before a complete response head gives the client 502.
func TestRespHangupBeforeHeaders502(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, resp string }{
		{"close", ""},
		{"partial-status-line", "HTTP/1.1 20"},
		{"partial-headers", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-"},
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := respRawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := respReadRequest(br); err == nil {
					io.WriteString(c, tc.resp)
				}
			})
			px := respProxy(t, proxy.Config{Retry: proxy.RetryPolicy{Backoff: time.Millisecond}}, up)
			res, err := respClient(t).Get(px.URL() + "/x")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", res.StatusCode)
			}
		})
	}
}
