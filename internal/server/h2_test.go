package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/sockio"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 resource attacks against the real server (Serve + proxy.New, h2c
// prior knowledge on loopback), driven frame by frame with x/net's Framer.
// Every attack is bounded in frames and time; during each a well-behaved
// client must keep getting answers within probeLimit, and the heap must come
// back to where it was.
//
// The first part of this file holds what the attack tests here and in
// slow_test.go share:
// sluice as it runs in production (Serve + proxy.New) in front of a counting
// backend, a well-behaved client that keeps asking while an attack runs, and
// memory and goroutine probes.

// backend is the upstream behind the proxy. Paths:
//
//	/ok       answers "ok" at once (the well-behaved client's path)
//	/slow     holds the request until release is closed or the request is
//	          cancelled (attack streams), counting requests in flight
//	/upload   reads the whole body and answers with its length
//	/big      streams a large body, 64 MiB or ?mib=N (writes counted in
//	          bigWritten, the outcome sent on bigDone)
//	/pause    writes "a", pauses 800 ms, writes "b"
//	/ws       answers 101 and echoes (an upgrade)
type backend struct {
	srv        *httptest.Server
	release    chan struct{}
	inflight   atomic.Int64
	maxInfl    atomic.Int64
	slowTotal  atomic.Int64
	bigWritten atomic.Int64
	bigDone    chan error // one value per /big request: how its copy ended
	tunnels    sync.WaitGroup
	closeOnce  sync.Once
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{release: make(chan struct{}), bigDone: make(chan error, 16)}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(func() {
		b.releaseAll()
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.tunnels.Wait()
	})
	return b
}

func (b *backend) releaseAll() { b.closeOnce.Do(func() { close(b.release) }) }

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ok":
		io.WriteString(w, "ok")
	case "/slow":
		b.slowTotal.Add(1)
		n := b.inflight.Add(1)
		defer b.inflight.Add(-1)
		for {
			m := b.maxInfl.Load()
			if n <= m || b.maxInfl.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-b.release:
			io.WriteString(w, "released")
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	case "/upload":
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		io.WriteString(w, itoa(n))
	case "/big":
		chunks := 2048 // 64 MiB
		if r.URL.Query().Get("mib") != "" {
			chunks = 32 * atoi(r.URL.Query().Get("mib"))
		}
		w.Header().Set("Content-Length", itoa(int64(chunks)*32<<10))
		chunk := []byte(strings.Repeat("x", 32<<10))
		var err error
		for i := 0; i < chunks && err == nil; i++ {
			_, err = w.Write(chunk)
			if err == nil {
				b.bigWritten.Add(int64(len(chunk)))
			}
		}
		b.bigDone <- err
	case "/pause":
		// A quiet stream: a byte, a pause longer than the test's
		// timeouts, another byte.
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "a")
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(800 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "b")
	case "/ws":
		// An upgrade that echoes what it gets.
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		b.tunnels.Add(1)
		defer b.tunnels.Done()
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	default:
		http.NotFound(w, r)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = 10*n + int(c-'0')
	}
	return n
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// stack is sluice serving on loopback in front of a backend.
type stack struct {
	addr  string
	back  *backend
	pool  *upstream.Pool
	conns *trackingListener
}

// startStack runs Serve with o (H2C forced on for plain TCP) and a
// proxy.Handler whose only upstream is a fresh backend. onAccept, when
// given, is called with every connection the server accepts.
func startStack(t *testing.T, o Options, onAccept ...func(*net.TCPConn)) *stack {
	t.Helper()
	b := startBackend(t)
	pool := upstream.NewPool(nil, upstream.New(strings.TrimPrefix(b.srv.URL, "http://")))
	t.Cleanup(func() { pool.Close() })
	h, err := proxy.New(proxy.Config{Upstreams: pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	o.H2C = true // ignored with TLS
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: ln, conns: map[string]*trackedConn{}}
	if len(onAccept) > 0 {
		tl.onAccept = onAccept[0]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, tl, h, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return &stack{addr: ln.Addr().String(), back: b, pool: pool, conns: tl}
}

// trackingListener remembers the connections it accepted, by the client's
// address, so a test can tell when the server closed one.
type trackingListener struct {
	net.Listener
	onAccept func(*net.TCPConn)
	mu       sync.Mutex
	conns    map[string]*trackedConn
}

type trackedConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.onAccept != nil {
		l.onAccept(c.(*net.TCPConn))
	}
	// Raw-syscall reads and writes, as Serve gives the TCP connections it
	// accepts itself (this wrapper hides the *net.TCPConn from it).
	tc := &trackedConn{Conn: sockio.Wrap(c), closed: make(chan struct{})}
	l.mu.Lock()
	l.conns[c.RemoteAddr().String()] = tc
	l.mu.Unlock()
	return tc, nil
}

// serverClosed waits up to d for the server to close its end of client
// connection c and reports whether it did.
func (s *stack) serverClosed(c net.Conn, d time.Duration) bool {
	var tc *trackedConn
	waitFor(time.Second, func() bool {
		s.conns.mu.Lock()
		defer s.conns.mu.Unlock()
		tc = s.conns.conns[c.LocalAddr().String()]
		return tc != nil
	})
	if tc == nil {
		return false
	}
	select {
	case <-tc.closed:
		return true
	case <-time.After(d):
		return false
	}
}

// upstreamFailures is how many attempts the pool counted as failures of the
// backend.
func (s *stack) upstreamFailures() uint64 {
	var n uint64
	for _, u := range s.pool.Status().Upstreams {
		n += u.Failures
	}
	return n
}

// prober is a well-behaved client: while an attack runs it asks GET /ok
// again and again, alternating HTTP/1.1 and h2c, each on its own
// connection, each with a 1 s limit.
type prober struct {
	stop           chan struct{}
	done           chan struct{}
	ok, failed     atomic.Int64
	maxLatency     atomic.Int64 // ns
	maxGoroutines  atomic.Int64
	firstErr       atomic.Value // string
	h1, h2         *http.Transport
	h1c, h2c       *http.Client
	url            string
	baseGoroutines int
}

const probeLimit = time.Second

func startProber(addr string) *prober { return startProberScheme(addr, "http") }

// startProberScheme probes over TLS (HTTP/1.1 and HTTP/2 by ALPN) when
// scheme is https.
func startProberScheme(addr, scheme string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{}), url: scheme + "://" + addr + "/ok", baseGoroutines: runtime.NumGoroutine()}
	p.h1 = &http.Transport{Protocols: new(http.Protocols)}
	p.h2 = &http.Transport{Protocols: new(http.Protocols)}
	if scheme == "https" {
		p.h1.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		p.h2.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		p.h1.Protocols.SetHTTP1(true)
		p.h2.Protocols.SetHTTP2(true)
	} else {
		p.h1.Protocols.SetHTTP1(true)
		p.h2.Protocols.SetUnencryptedHTTP2(true)
	}
	p.h1c = &http.Client{Transport: p.h1, Timeout: probeLimit}
	p.h2c = &http.Client{Transport: p.h2, Timeout: probeLimit}
	go p.run()
	return p
}

func (p *prober) run() {
	defer close(p.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		c := p.h1c
		if i%2 == 1 {
			c = p.h2c
		}
		p.once(c)
		if g := int64(runtime.NumGoroutine()); g > p.maxGoroutines.Load() {
			p.maxGoroutines.Store(g)
		}
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

func (p *prober) once(c *http.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), probeLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url, nil)
	t0 := time.Now()
	res, err := c.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil && (res.StatusCode != 200 || string(body) != "ok") {
			err = &probeError{res.Status + " " + string(body)}
		}
	}
	lat := time.Since(t0)
	if err != nil {
		p.failed.Add(1)
		p.firstErr.CompareAndSwap(nil, err.Error())
		return
	}
	p.ok.Add(1)
	if int64(lat) > p.maxLatency.Load() {
		p.maxLatency.Store(int64(lat))
	}
}

type probeError struct{ s string }

func (e *probeError) Error() string { return e.s }

// finish stops the prober and fails t unless every probe succeeded within
// probeLimit (and there were some).
func (p *prober) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	p.h1.CloseIdleConnections()
	p.h2.CloseIdleConnections()
	t.Logf("well-behaved client: %d ok, %d failed, max latency %v; goroutines %d before, max %d during",
		p.ok.Load(), p.failed.Load(), time.Duration(p.maxLatency.Load()).Round(time.Millisecond),
		p.baseGoroutines, p.maxGoroutines.Load())
	if p.failed.Load() > 0 {
		t.Errorf("well-behaved client failed %d times during the attack; first: %v", p.failed.Load(), p.firstErr.Load())
	}
	if p.ok.Load() == 0 {
		t.Error("well-behaved client got no answer during the attack")
	}
}

// heapInuse is HeapInuse after a GC.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// checkHeap fails t when the heap grew more than limit since before.
func checkHeap(t *testing.T, before uint64, limit uint64) {
	t.Helper()
	after := heapInuse()
	grew := int64(after) - int64(before)
	t.Logf("heap in use: %.1f MiB before, %.1f MiB after (%+.1f MiB)",
		float64(before)/(1<<20), float64(after)/(1<<20), float64(grew)/(1<<20))
	if grew > int64(limit) {
		t.Errorf("heap in use grew by %.1f MiB, limit %.1f MiB", float64(grew)/(1<<20), float64(limit)/(1<<20))
	}
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h2raw is an attacker's HTTP/2 connection: frames are written by the test
// goroutine through a buffer (flush to send), and read by a goroutine that
// records what the server answered.
type h2raw struct {
	c      net.Conn
	bw     *bufio.Writer
	fr     *http2.Framer
	hdr    []byte // HEADERS block for GET path
	server map[http2.SettingID]uint32

	mu        sync.Mutex
	goAway    *http2.ErrCode
	goAwayAt  time.Time
	rst       map[http2.ErrCode]int
	status    map[uint32]string // :status per stream
	dataBytes int
	readErr   error
	closedAt  time.Time
	done      chan struct{}
}

// dialH2 opens an h2c prior-knowledge connection, sends settings, reads the
// server's SETTINGS, acknowledges them and starts the frame reader. The whole
// connection has a 30 s deadline so nothing can hang the test.
func dialH2(t *testing.T, addr, path string, settings ...http2.Setting) *h2raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := &h2raw{c: c, bw: bufio.NewWriterSize(c, 64<<10), server: map[http2.SettingID]uint32{},
		rst: map[http2.ErrCode]int{}, status: map[uint32]string{}, done: make(chan struct{})}
	t.Cleanup(h.close)
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.AllowIllegalWrites = true
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", addr}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true}) // never indexed: the block can be resent
	}
	h.hdr = hb.Bytes()

	io.WriteString(h.bw, http2.ClientPreface)
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	h.flush(t)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		sf.ForeachSetting(func(s http2.Setting) error { h.server[s.ID] = s.Val; return nil })
		break
	}
	if err := h.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	h.flush(t)
	go h.read()
	return h
}

func (h *h2raw) flush(t *testing.T) {
	t.Helper()
	if err := h.bw.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (h *h2raw) read() {
	defer close(h.done)
	for {
		f, err := h.fr.ReadFrame()
		h.mu.Lock()
		if err != nil {
			h.readErr, h.closedAt = err, time.Now()
			h.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			code := f.ErrCode
			h.goAway, h.goAwayAt = &code, time.Now()
		case *http2.RSTStreamFrame:
			h.rst[f.ErrCode]++
		case *http2.MetaHeadersFrame:
			h.status[f.StreamID] = f.PseudoValue("status")
		case *http2.DataFrame:
			h.dataBytes += len(f.Data())
		}
		h.mu.Unlock()
	}
}

func (h *h2raw) close() {
	h.c.Close()
	<-h.done
}

// closed reports whether the server closed the connection (the reader saw
// EOF or a reset).
func (h *h2raw) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *h2raw) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	if h.goAway != nil {
		b.WriteString("GOAWAY " + h.goAway.String())
	} else {
		b.WriteString("no GOAWAY")
	}
	if !h.closedAt.IsZero() {
		b.WriteString(", connection closed (" + h.readErr.Error() + ")")
	} else {
		b.WriteString(", connection open")
	}
	for code, n := range h.rst {
		b.WriteString(", " + itoa(int64(n)) + " RST_STREAM " + code.String())
	}
	b.WriteString(", " + itoa(int64(len(h.status))) + " responses")
	return b.String()
}

func (h *h2raw) goAwayCode() (http2.ErrCode, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.goAway == nil {
		return 0, false
	}
	return *h.goAway, true
}

// TestH2Settings checks what the server announces: the stream and frame
// limits of h2conf.go.
func TestH2Settings(t *testing.T) {
	s := startStack(t, Options{})
	h := dialH2(t, s.addr, "/ok")
	if got := h.server[http2.SettingMaxConcurrentStreams]; got != DefaultMaxConcurrentStreams {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", got, DefaultMaxConcurrentStreams)
	}
	if got := h.server[http2.SettingMaxFrameSize]; got != DefaultMaxReadFrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE = %d, want %d", got, DefaultMaxReadFrameSize)
	}
	// A frame above the announced size is a connection error (RFC 9113
	// §4.2): h2spec http2/4.2/3.
	big := make([]byte, DefaultMaxReadFrameSize+1)
	h.fr.WriteRawFrame(http2.FrameData, 0, 1, big)
	h.bw.Flush()
	select {
	case <-h.done:
	case <-time.After(2 * time.Second):
		t.Fatal("connection still open 2 s after an oversized frame")
	}
	if code, ok := h.goAwayCode(); !ok || code != http2.ErrCodeFrameSize {
		t.Errorf("after an oversized frame: %s; want GOAWAY FRAME_SIZE_ERROR", h.summary())
	}
}

// resetAttack is one stream-resetting attack: it opens streams to /slow and
// gets each reset right away, by the client (Rapid Reset) or by the server
// after a frame the client made invalid on purpose (MadeYouReset).
type resetAttack struct {
	name string
	// reset writes the frame(s) that end stream id after its HEADERS.
	reset func(fr *http2.Framer, id uint32) error
}

// TestH2ResetFloods runs Rapid Reset (CVE-2023-44487) and MadeYouReset
// (CVE-2025-8671) against the proxy: up to 20 000 streams, each opened to a
// path whose upstream request would hang, each reset at once. net/http runs
// at most MaxConcurrentStreams handlers per connection (the rest are queued,
// and a queue past 4x that closes the connection with ENHANCE_YOUR_CALM), and
// a reset cancels the handler's context, which cancels the upstream request.
// Required: the backend never sees more than MaxConcurrentStreams of the
// attacker's requests at once, none is left in flight afterwards, goroutines
// and heap stay bounded, and the well-behaved client keeps its latency.
func TestH2ResetFloods(t *testing.T) {
	attacks := []resetAttack{
		{"rapid reset", func(fr *http2.Framer, id uint32) error {
			return fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}},
		{"MadeYouReset (WINDOW_UPDATE 0)", func(fr *http2.Framer, id uint32) error {
			// A zero increment on a stream is a stream error: the
			// server resets the stream, not the client.
			return fr.WriteWindowUpdate(id, 0)
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) { testResetFlood(t, a) })
	}
}

func testResetFlood(t *testing.T, a resetAttack) {
	// For a second, or 200 000 streams, whichever ends first: the writes
	// block when the server falls behind, so the attack runs as fast as
	// the server reads it.
	const streams = 200000
	s := startStack(t, Options{})
	before := heapInuse()
	p := startProber(s.addr)
	h := dialH2(t, s.addr, "/slow")

	t0 := time.Now()
	deadline := t0.Add(time.Second)
	// A write blocked on a server that fell behind ends the attack too.
	h.c.SetWriteDeadline(deadline.Add(200 * time.Millisecond))
	sent := 0
	var werr error
	for i := 0; i < streams && werr == nil && (i%50 != 0 || time.Now().Before(deadline)); i++ {
		id := uint32(2*i + 1)
		werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hdr, EndStream: true, EndHeaders: true})
		if werr == nil {
			werr = a.reset(h.fr, id)
		}
		if i%50 == 49 {
			if err := h.bw.Flush(); err != nil && werr == nil {
				werr = err
			}
		}
		sent = i + 1
	}
	if werr == nil {
		werr = h.bw.Flush()
	}
	elapsed := time.Since(t0)
	// Let the server catch up with what it read, then look.
	time.Sleep(100 * time.Millisecond)
	p.finish(t)
	t.Logf("%d streams opened and reset in %v (write error: %v); server: %s; backend saw %d of them, at most %d at once",
		sent, elapsed.Round(time.Millisecond), werr, h.summary(), s.back.slowTotal.Load(), s.back.maxInfl.Load())

	if m := s.back.maxInfl.Load(); m > DefaultMaxConcurrentStreams {
		t.Errorf("backend saw %d of the attacker's requests at once, want at most %d (MaxConcurrentStreams)", m, DefaultMaxConcurrentStreams)
	}
	if g := p.maxGoroutines.Load(); g > int64(p.baseGoroutines)+4*DefaultMaxConcurrentStreams {
		t.Errorf("goroutines reached %d during the attack (%d before): not bounded by the stream limit", g, p.baseGoroutines)
	}
	h.close()
	if !waitFor(2*time.Second, func() bool { return s.back.inflight.Load() == 0 }) {
		t.Errorf("%d attack requests still in flight at the backend 2 s after the connection closed", s.back.inflight.Load())
	}
	if !waitFor(2*time.Second, func() bool { return s.pool.Status().Upstreams[0].Inflight == 0 }) {
		t.Errorf("the pool still counts %d requests in flight", s.pool.Status().Upstreams[0].Inflight)
	}
	if f := s.upstreamFailures(); f != 0 {
		t.Errorf("the pool counted %d upstream failures: client resets must not count against the upstream", f)
	}
	checkHeap(t, before, 8<<20)
}

// TestH2StreamLimit opens three times MaxConcurrentStreams streams at once on
// one connection, none of them finishing. The excess must be refused
// (RST_STREAM), never queued without bound or sent upstream; the accepted
// ones are answered once the backend lets them go.
func TestH2StreamLimit(t *testing.T) {
	const streams = 3 * DefaultMaxConcurrentStreams
	s := startStack(t, Options{})
	before := heapInuse()
	p := startProber(s.addr)
	h := dialH2(t, s.addr, "/slow")
	for i := 0; i < streams; i++ {
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: h.hdr, EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	h.flush(t)
	if !waitFor(3*time.Second, func() bool { return s.back.inflight.Load() >= DefaultMaxConcurrentStreams }) {
		t.Errorf("backend has %d requests in flight, want %d", s.back.inflight.Load(), DefaultMaxConcurrentStreams)
	}
	time.Sleep(200 * time.Millisecond) // anything more would show up now
	if n := s.back.inflight.Load(); n != DefaultMaxConcurrentStreams {
		t.Errorf("backend has %d requests in flight, want exactly %d", n, DefaultMaxConcurrentStreams)
	}
	time.Sleep(300 * time.Millisecond) // the prober keeps asking meanwhile
	s.back.releaseAll()
	refused := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, c := range h.rst {
			n += c
		}
		return n
	}
	ok := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, st := range h.status {
			if st == "200" {
				n++
			}
		}
		return n
	}
	waitFor(3*time.Second, func() bool {
		return ok() == DefaultMaxConcurrentStreams && refused() == streams-DefaultMaxConcurrentStreams
	})
	p.finish(t)
	t.Logf("server: %s; backend max in flight %d", h.summary(), s.back.maxInfl.Load())
	if got := ok(); got != DefaultMaxConcurrentStreams {
		t.Errorf("%d streams answered 200, want %d", got, DefaultMaxConcurrentStreams)
	}
	if got := refused(); got != streams-DefaultMaxConcurrentStreams {
		t.Errorf("%d streams refused with RST_STREAM, want %d", got, streams-DefaultMaxConcurrentStreams)
	}
	if m := s.back.maxInfl.Load(); m > DefaultMaxConcurrentStreams {
		t.Errorf("backend saw %d requests at once, want at most %d", m, DefaultMaxConcurrentStreams)
	}
	checkHeap(t, before, 8<<20)
}

// TestH2ContinuationFlood sends a HEADERS frame without END_HEADERS and then
// CONTINUATION frames without end (CVE-2023-45288). With fragments carrying
// header fields, net/http stops decoding once the header list passes
// MaxHeaderBytes and closes the connection at the next frame. With empty
// fragments (the Netty CVE-2026-33871 variant) the list never grows, and the
// connection lives until IdleTimeout (a stream that is still receiving its
// headers is not open yet, so the connection counts as idle): the same bound
// as any idle connection, at no memory cost.
func TestH2ContinuationFlood(t *testing.T) {
	fields := func() []byte {
		var b bytes.Buffer
		enc := hpack.NewEncoder(&b)
		for i := 0; i < 3; i++ {
			enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 5000), Sensitive: true})
		}
		return b.Bytes()
	}()
	cases := []struct {
		name     string
		frag     []byte
		idle     time.Duration
		goAwayBy time.Duration // GOAWAY must come this soon
		goAway   http2.ErrCode
	}{
		{"header fields", fields, 0, 500 * time.Millisecond, http2.ErrCodeProtocol},
		{"empty fragments", nil, time.Second, 1500 * time.Millisecond, http2.ErrCodeNo},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.frag) > DefaultMaxReadFrameSize {
				t.Fatalf("fragment of %d bytes is above the frame size limit", len(tc.frag))
			}
			s := startStack(t, Options{IdleTimeout: tc.idle})
			before := heapInuse()
			p := startProber(s.addr)
			h := dialH2(t, s.addr, "/slow")
			t0 := time.Now()
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hdr, EndStream: true}); err != nil {
				t.Fatal(err)
			}
			frames, bytesSent := 0, 0
			var werr error
			for werr == nil && time.Since(t0) < tc.goAwayBy+2*time.Second && !h.closed() {
				for i := 0; i < 100 && werr == nil; i++ {
					werr = h.fr.WriteContinuation(1, false, tc.frag)
					frames++
					bytesSent += 9 + len(tc.frag)
				}
				if werr == nil {
					werr = h.bw.Flush()
				}
			}
			select {
			case <-h.done:
			case <-time.After(time.Until(t0.Add(tc.goAwayBy + 2*time.Second))):
			}
			took := time.Since(t0)
			p.finish(t)
			t.Logf("%d CONTINUATION frames (%d KiB) written in %v (write error: %v); server: %s",
				frames, bytesSent>>10, took.Round(time.Millisecond), werr, h.summary())
			// net/http sends GOAWAY and closes the connection 1 s
			// later (goAwayTimeout), so that the GOAWAY is read.
			if code, ok := h.goAwayCode(); !ok || code != tc.goAway {
				t.Errorf("server: %s; want GOAWAY %v", h.summary(), tc.goAway)
			} else if at := h.goAwayAt.Sub(t0); at > tc.goAwayBy {
				t.Errorf("GOAWAY came after %v, want within %v", at, tc.goAwayBy)
			} else {
				t.Logf("GOAWAY after %v", at.Round(time.Millisecond))
			}
			if !h.closed() || h.closedAt.Sub(t0) > tc.goAwayBy+1500*time.Millisecond {
				t.Errorf("connection not closed within %v", tc.goAwayBy+1500*time.Millisecond)
			}
			if n := s.back.slowTotal.Load(); n != 0 {
				t.Errorf("the unfinished header block reached the backend %d times", n)
			}
			checkHeap(t, before, 8<<20)
		})
	}
}

// TestH2ConnectionSpecificFieldsNotForwarded backs the h2spec known failures
// http2/8.1.2.2/1 and /2 (docs/conformance.md): net/http answers a request
// with a connection-specific field, or TE other than "trailers", with 400
// instead of a stream error, but either way the request never reaches the
// handler, so nothing is forwarded.
func TestH2ConnectionSpecificFieldsNotForwarded(t *testing.T) {
	s := startStack(t, Options{})
	for i, field := range [][2]string{
		{"connection", "keep-alive"},
		{"keep-alive", "timeout=5"},
		{"proxy-connection", "keep-alive"},
		{"transfer-encoding", "chunked"},
		{"upgrade", "websocket"},
		{"te", "gzip"},
	} {
		h := dialH2(t, s.addr, "/slow")
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", s.addr}, {":path", "/slow"}, field} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		h.flush(t)
		var status string
		waitFor(2*time.Second, func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			status = h.status[1]
			return status != "" || len(h.rst) > 0 || h.readErr != nil
		})
		if status != "400" {
			t.Errorf("%d: %s: %s; want 400", i, field[0], h.summary())
		}
		h.close()
	}
	if n := s.back.slowTotal.Load(); n != 0 {
		t.Errorf("%d of the requests reached the backend", n)
	}
}
