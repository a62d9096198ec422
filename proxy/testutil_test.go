package proxy_test

// Helpers for the request-side and retry tests: raw TCP upstreams that record
// exactly what the proxy sent, addresses that refuse connections, raw client
// requests, and a mutex-protected JSON access log.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// rawIOTimeout bounds every blocking socket operation in these tests.
const rawIOTimeout = 10 * time.Second

// cannedOK200 is the default answer of a raw upstream. Connection: close keeps
// one request per upstream connection, so counts and bytes stay exact and
// the proxy's transport never reuses a connection we are about to drop.
const cannedOK200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok"

// recorded is one request as a raw upstream received it.
type recordedRequest struct {
	Raw       []byte      // first bytes read from the connection (head, then body)
	Head      string      // request line and header lines, up to and excluding the blank line
	Method    string      // as parsed
	Target    string      // request-target exactly as on the request line
	Header    http.Header // as parsed by net/http (for convenience; Head is the truth)
	Trailer   http.Header // request trailers, after the body was read
	BodyLen   int64
	BodySHA   string
	BodyError error
	At        time.Time // when the head was complete
}

// lines returns the header lines of the head (without the request line).
func (r *recordedRequest) lines() []string {
	ls := strings.Split(r.Head, "\r\n")
	return ls[1:]
}

// values returns the raw values of every header line named name
// (case-insensitive), in order, exactly as sent (leading OWS trimmed).
func (r *recordedRequest) values(name string) []string {
	var out []string
	for _, l := range r.lines() {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(k, name) {
			out = append(out, strings.TrimLeft(v, " \t"))
		}
	}
	return out
}

func (r *recordedRequest) has(name string) bool { return len(r.values(name)) > 0 }

// recordingUpstream is a TCP server that reads one request per connection with
// http.ReadRequest over a tee of the socket, records it, and then lets act
// answer (or misbehave).
type recordingUpstream struct {
	t    testing.TB
	ln   net.Listener
	Addr string
	act  func(c net.Conn, r *recordedRequest)

	mu   sync.Mutex
	reqs []*recordedRequest
	wg   sync.WaitGroup
}

// answerWith answers every request with the given raw response and closes.
func answerWith(resp string) func(net.Conn, *recordedRequest) {
	return func(c net.Conn, _ *recordedRequest) { io.WriteString(c, resp) }
}

// resetAfterRequest drops the connection with an RST (SO_LINGER 0) after the request
// was read: the upstream saw the request and never answered.
func resetAfterRequest(c net.Conn, _ *recordedRequest) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// closeAfterRequest closes the connection cleanly (FIN) without answering.
func closeAfterRequest(c net.Conn, _ *recordedRequest) { c.Close() }

// newRecordingUpstream starts a raw upstream; act nil means answerWith(cannedOK200).
func newRecordingUpstream(t testing.TB, act func(net.Conn, *recordedRequest)) *recordingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if act == nil {
		act = answerWith(cannedOK200)
	}
	u := &recordingUpstream{t: t, ln: ln, Addr: ln.Addr().String(), act: act}
	u.wg.Add(1)
	go u.serve()
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) serve() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(rawIOTimeout))
			rec := readRecordedRequest(c)
			if rec == nil {
				return
			}
			u.mu.Lock()
			u.reqs = append(u.reqs, rec)
			u.mu.Unlock()
			u.act(c, rec)
		}()
	}
}

// Close stops accepting and waits for every connection handler (each is
// bounded by rawIOTimeout).
func (u *recordingUpstream) Close() {
	u.ln.Close()
	u.wg.Wait()
}

func (u *recordingUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *recordingUpstream) requests() []*recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*recordedRequest(nil), u.reqs...)
}

// only returns the single request the upstream received, failing otherwise.
func (u *recordingUpstream) only(t testing.TB) *recordedRequest {
	t.Helper()
	rs := u.requests()
	if len(rs) != 1 {
		t.Fatalf("upstream %s received %d requests, want exactly 1", u.Addr, len(rs))
	}
	return rs[0]
}

// readRecordedRequest reads one request from c, keeping the raw bytes.
func readRecordedRequest(c net.Conn) *recordedRequest {
	raw := &cappedBuffer{max: 256 << 10}
	br := bufio.NewReader(io.TeeReader(c, raw))
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	rec := &recordedRequest{Method: req.Method, Target: req.RequestURI, Header: req.Header, At: time.Now()}
	h := sha256.New()
	rec.BodyLen, rec.BodyError = io.Copy(h, req.Body)
	rec.BodySHA = hex.EncodeToString(h.Sum(nil))
	rec.Trailer = req.Trailer
	rec.Raw = append([]byte(nil), raw.b.Bytes()...)
	if i := bytes.Index(rec.Raw, []byte("\r\n\r\n")); i >= 0 {
		rec.Head = string(rec.Raw[:i])
	}
	return rec
}

// cappedBuffer keeps the first max bytes written to it and drops the rest,
// so a 64 MiB upload does not have to be held in memory.
type cappedBuffer struct {
	b   bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// recordedProxy starts an upstream that records what it receives and a
// proxy in front of it with cfg (its Upstreams set to that upstream).
func recordedProxy(t *testing.T, cfg proxy.Config) (*recordingUpstream, *httptest.Server) {
	t.Helper()
	up := newRecordingUpstream(t, nil)
	cfg.Upstreams = poolOfAddrs(up.Addr)
	return up, newProxy(t, cfg)
}

// refusedAddr returns a loopback address nothing listens on: a listener
// opened and closed again, so dialing it is refused at once.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// poolOfAddrs builds a round-robin pool over addresses.
func poolOfAddrs(addrs ...string) *upstream.Pool {
	ups := make([]*upstream.Upstream, len(addrs))
	for i, a := range addrs {
		ups[i] = upstream.New(a)
	}
	return upstream.NewPool(nil, ups...)
}

// firstUsableSelector is a Selector that always picks the first usable upstream in
// list order, so "not picked again" is the proxy's doing, not rotation's.
type firstUsableSelector struct{}

func (firstUsableSelector) Select(ups []*upstream.Upstream, s *upstream.Selection) *upstream.Upstream {
	for _, u := range ups {
		if s.Usable(u) {
			return u
		}
	}
	return nil
}

// startWrappedProxy builds a Handler from cfg and serves it, optionally wrapped.
// It returns the server and the handler (for Close and Tunnels).
func startWrappedProxy(t testing.TB, cfg proxy.Config, wrap func(http.Handler) http.Handler) (*httptest.Server, *proxy.Handler) {
	t.Helper()
	h, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var hh http.Handler = h
	if wrap != nil {
		hh = wrap(h)
	}
	srv := frontServer(t, hh)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv, h
}

// serverAddr returns host:port of a test server.
func serverAddr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// isolatedClient returns a client with its own transport that adds nothing of its
// own (no Accept-Encoding), cleaned up at the end of the test.
func isolatedClient(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true, Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// rawRequestResponse sends raw request bytes on a fresh connection and reads one
// response (status, headers and the whole body).
func rawRequestResponse(t testing.TB, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, rawIOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(rawIOTimeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return res, string(body)
}

// detBytes returns n deterministic pseudo-random bytes.
func detBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
	b := make([]byte, n)
	r.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hashingRandomReader streams n deterministic bytes and hashes what it gave out.
type hashingRandomReader struct {
	left int64
	r    *rand.ChaCha8
	h    interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newHashingRandomReader(n int64, seed uint64) *hashingRandomReader {
	return &hashingRandomReader{left: n, r: rand.NewChaCha8([32]byte{byte(seed), 9}), h: sha256.New()}
}

func (rr *hashingRandomReader) Read(p []byte) (int, error) {
	if rr.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rr.left {
		p = p[:rr.left]
	}
	n, _ := rr.r.Read(p)
	rr.h.Write(p[:n])
	rr.left -= int64(n)
	return n, nil
}

func (rr *hashingRandomReader) sum() string { return hex.EncodeToString(rr.h.Sum(nil)) }

// lockedBuffer is a bytes.Buffer safe for the proxy's goroutines and the test.
type lockedBuffer = testkit.LockedBuffer

// accessLog returns a JSON access logger and a function that waits (bounded)
// until at least n lines were written and returns them decoded.
func jsonAccessLog(t testing.TB) (*slog.Logger, func(n int) []map[string]any) {
	buf := &lockedBuffer{}
	l := slog.New(slog.NewJSONHandler(buf, nil))
	return l, func(n int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var out []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if line == "" {
					continue
				}
				m := map[string]any{}
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("access log line is not JSON: %q: %v", line, err)
				}
				out = append(out, m)
			}
			if len(out) >= n || time.Now().After(deadline) {
				if len(out) < n {
					t.Fatalf("access log has %d lines, want %d: %s", len(out), n, buf.String())
				}
				return out
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// discardLogger discards the proxy's error log so expected failures do not
// clutter test output.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// pollUntil polls cond every few milliseconds for at most d.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}
