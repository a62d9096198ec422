package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// backend is one upstream: an HTTP server on a fixed loopback port that the
// chaos loop can kill (listener and every connection closed abruptly),
// restart on the same port, slow down, make reset each connection after
// reading the request, or make cut some responses mid-body.
//
// Endpoints (every request carries X-Request-Id):
//
//	GET  /blob?size=N[&chunked=1]  N bytes; X-Body-Sha256 is their hash
//	POST /upload                   body checked against X-Body-Sha256; id recorded
//	GET  /sse?n=N&interval=MS      N events "data: seq=i", then the end
//	GET  /ws                       WebSocket echo until a close frame
type backend struct {
	idx    int
	name   string
	seed   uint64
	reg    *registry
	block  []byte // random bytes /blob serves slices of
	errLog *log.Logger

	// Chaos modes: active until these instants (unix nanoseconds).
	slowUntil  atomic.Int64
	resetUntil atomic.Int64
	midUntil   atomic.Int64

	mu      sync.Mutex
	addr    string
	up      bool
	life    *life
	recent  [1024]finished // responses that ended lately, for kills
	recentN int

	requests   atomic.Int64 // requests that reached a handler
	connResets atomic.Int64 // connections reset by the reset mode
	cuts       atomic.Int64 // responses cut mid-body by the midbody mode
	slowed     atomic.Int64 // requests delayed by the slow mode
}

// life is one incarnation of a backend, from start to kill.
type life struct {
	ln     net.Listener
	srv    *http.Server
	served chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	conns  map[*trackedConn]struct{}
	active map[*activeReq]struct{}
}

type activeReq struct {
	id      uint64
	headers atomic.Bool // response headers were handed to net/http
}

type finished struct {
	id  uint64
	end time.Time
}

// killGrace: a response whose handler ended this recently may still be in
// the kernel's send buffer when a kill resets the connection.
const killGrace = 500 * time.Millisecond

func newBackend(idx int, seed uint64, reg *registry, block []byte, errLog *log.Logger) *backend {
	return &backend{
		idx: idx, name: fmt.Sprintf("up%d", idx+1), seed: seed,
		reg: reg, block: block, errLog: errLog,
	}
}

func (b *backend) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

func (b *backend) isUp() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up
}

// start listens (on the port of the previous life, if any) and serves.
func (b *backend) start() error {
	b.mu.Lock()
	if b.up {
		b.mu.Unlock()
		return nil
	}
	addr := b.addr
	b.mu.Unlock()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	// The port was ours a moment ago; if another socket grabbed it in
	// between, keep trying for a while (Go sets SO_REUSEADDR, so our own
	// TIME_WAIT connections do not block it).
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("%s: listen again on %s: %w", b.name, addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lf := &life{
		ln: ln, served: make(chan struct{}), ctx: ctx, cancel: cancel,
		conns: make(map[*trackedConn]struct{}), active: make(map[*activeReq]struct{}),
	}
	lf.srv = &http.Server{
		Handler:           b,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute, // above the proxy's 90s idle timeout
		ErrorLog:          b.errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	b.mu.Lock()
	b.addr = ln.Addr().String()
	b.life = lf
	b.up = true
	b.mu.Unlock()
	go func() {
		defer close(lf.served)
		_ = lf.srv.Serve(&trackingListener{Listener: ln, b: b, life: lf})
	}()
	return nil
}

// kill closes the listener and resets every open connection (SO_LINGER 0),
// hijacked WebSockets included. Responses whose headers were already out
// are recorded as cut. It reports whether the backend was up.
func (b *backend) kill() bool {
	b.mu.Lock()
	if !b.up {
		b.mu.Unlock()
		return false
	}
	b.up = false
	lf := b.life
	conns := make([]*trackedConn, 0, len(lf.conns))
	for c := range lf.conns {
		conns = append(conns, c)
	}
	b.markKilled(lf)
	b.mu.Unlock()

	lf.ln.Close()
	for _, c := range conns {
		c.reset()
	}
	// Again after the resets: a handler marks its headers before writing
	// them, so every response the proxy could have started is seen by now.
	b.mu.Lock()
	b.markKilled(lf)
	b.mu.Unlock()

	lf.cancel()
	lf.srv.Close()
	<-lf.served
	return true
}

// markKilled records as cut the responses of lf that had sent headers, and
// those that ended just before the kill (their last bytes may still have
// been in the send buffer the reset discards). b.mu is held.
func (b *backend) markKilled(lf *life) {
	for ar := range lf.active {
		if ar.headers.Load() {
			b.reg.markCut(ar.id, b.idx, cutKilled)
		}
	}
	now := time.Now()
	for i := range min(b.recentN, len(b.recent)) {
		if f := b.recent[i]; now.Sub(f.end) < killGrace {
			b.reg.markCut(f.id, b.idx, cutKilledJustNow)
		}
	}
}

// clearModes ends slow, reset and midbody modes.
func (b *backend) clearModes() {
	b.slowUntil.Store(0)
	b.resetUntil.Store(0)
	b.midUntil.Store(0)
}

// disrupted reports whether chaos currently affects b.
func (b *backend) disrupted(now time.Time) bool {
	n := now.UnixNano()
	return !b.isUp() || n < b.slowUntil.Load() || n < b.resetUntil.Load() || n < b.midUntil.Load()
}

func (b *backend) begin(lf *life, id uint64) *activeReq {
	ar := &activeReq{id: id}
	b.mu.Lock()
	lf.active[ar] = struct{}{}
	b.mu.Unlock()
	return ar
}

func (b *backend) end(lf *life, ar *activeReq) {
	b.mu.Lock()
	delete(lf.active, ar)
	if ar.headers.Load() {
		b.recent[b.recentN%len(b.recent)] = finished{ar.id, time.Now()}
		b.recentN++
	}
	b.mu.Unlock()
}

// rnd is a per-request random number, reproducible from the seed and id.
func (b *backend) rnd(id, salt uint64) uint64 {
	return mix64(b.seed ^ id ^ uint64(b.idx+1)<<56 ^ salt*0x9e3779b97f4a7c15)
}

// cutThis reports whether the midbody mode cuts the response to id (one in
// three while the mode lasts).
func (b *backend) cutThis(id uint64) bool {
	return time.Now().UnixNano() < b.midUntil.Load() && b.rnd(id, 1)%3 == 0
}

// cut records id as cut and resets its connection; the handler must panic
// with http.ErrAbortHandler after it.
func (b *backend) cut(tc *trackedConn, id uint64) {
	b.cuts.Add(1)
	b.reg.markCut(id, b.idx, cutMidBody)
	tc.reset()
}

type connKey struct{}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tc, _ := r.Context().Value(connKey{}).(*trackedConn)
	if tc == nil {
		http.Error(w, "untracked connection", http.StatusInternalServerError)
		return
	}
	b.requests.Add(1)
	id, _ := strconv.ParseUint(r.Header.Get("X-Request-Id"), 10, 64)
	if r.Method == http.MethodPost && r.URL.Path == "/upload" {
		// Reaching the upstream at all is what must happen at most once.
		b.reg.recordPost(id, b.idx)
	}
	lf := tc.life
	ar := b.begin(lf, id)
	defer b.end(lf, ar)

	now := time.Now().UnixNano()
	if now < b.resetUntil.Load() {
		// Read the request, then reset instead of answering.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 4<<20))
		b.connResets.Add(1)
		tc.reset()
		panic(http.ErrAbortHandler)
	}
	if now < b.slowUntil.Load() {
		b.slowed.Add(1)
		d := 100*time.Millisecond + time.Duration(b.rnd(id, 2)%401)*time.Millisecond
		if !sleepCtx(d, r.Context(), lf.ctx) {
			return
		}
	}
	w.Header().Set("X-Upstream", b.name)
	switch {
	case r.URL.Path == "/blob" && r.Method == http.MethodGet:
		b.serveBlob(w, r, tc, ar)
	case r.URL.Path == "/upload" && r.Method == http.MethodPost:
		b.serveUpload(w, r, ar)
	case r.URL.Path == "/sse" && r.Method == http.MethodGet:
		b.serveSSE(w, r, tc, ar, lf)
	case r.URL.Path == "/ws" && r.Method == http.MethodGet:
		b.serveWS(w, r, tc, ar)
	default:
		http.Error(w, "no such endpoint", http.StatusNotFound)
	}
}

func (b *backend) serveBlob(w http.ResponseWriter, r *http.Request, tc *trackedConn, ar *activeReq) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("size"))
	if err != nil || size < 0 || size > len(b.block) {
		http.Error(w, "bad size", http.StatusBadRequest)
		return
	}
	off := int(b.rnd(ar.id, 3) % uint64(len(b.block)-size+1))
	body := b.block[off : off+size]
	sum := sha256.Sum256(body)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
	h.Set("X-Body-Size", strconv.Itoa(size))
	chunked := q.Get("chunked") == "1"
	if !chunked {
		h.Set("Content-Length", strconv.Itoa(size))
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	ar.headers.Store(true)
	if chunked {
		// Headers out now, so net/http cannot compute a length.
		if rc.Flush() != nil {
			return
		}
	}
	if size >= 2 && b.cutThis(ar.id) {
		if _, err := w.Write(body[:size/2]); err != nil || rc.Flush() != nil {
			return
		}
		b.cut(tc, ar.id)
		panic(http.ErrAbortHandler)
	}
	_, _ = w.Write(body)
}

func (b *backend) serveUpload(w http.ResponseWriter, r *http.Request, ar *activeReq) {
	want := r.Header.Get("X-Body-Sha256")
	h := sha256.New()
	if _, err := io.Copy(h, r.Body); err != nil {
		return // the proxy broke off; there is no one to answer
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want {
		b.reg.hashMismatch.Add(1)
		http.Error(w, "body hash mismatch: got "+got+", header says "+want, http.StatusBadRequest)
		return
	}
	b.reg.postVerified(ar.id)
	w.Header().Set("X-Body-Sha256", got)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	ar.headers.Store(true)
	_, _ = io.WriteString(w, "ok\n")
}

func (b *backend) serveSSE(w http.ResponseWriter, r *http.Request, tc *trackedConn, ar *activeReq, lf *life) {
	q := r.URL.Query()
	n, err1 := strconv.Atoi(q.Get("n"))
	ms, err2 := strconv.Atoi(q.Get("interval"))
	if err1 != nil || err2 != nil || n < 1 || n > 10000 || ms < 0 || ms > 10000 {
		http.Error(w, "bad n or interval", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	ar.headers.Store(true)
	if rc.Flush() != nil {
		return
	}
	cutAt := -1
	if n >= 2 && b.cutThis(ar.id) {
		cutAt = 1 + int(b.rnd(ar.id, 4)%uint64(n-1))
	}
	interval := time.Duration(ms) * time.Millisecond
	for i := range n {
		if i == cutAt {
			b.cut(tc, ar.id)
			panic(http.ErrAbortHandler)
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: tick\ndata: seq=%d req=%d\n\n", i, i, ar.id); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		if i < n-1 && !sleepCtx(interval, r.Context(), lf.ctx) {
			return
		}
	}
}

func (b *backend) serveWS(w http.ResponseWriter, r *http.Request, tc *trackedConn, ar *activeReq) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "websocket only", http.StatusBadRequest)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	ar.headers.Store(true)
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\nX-Upstream: %s\r\n\r\n", wsAccept(key), b.name)
	if brw.Flush() != nil {
		return
	}
	cutAfter := -1
	if b.cutThis(ar.id) {
		cutAfter = int(b.rnd(ar.id, 5) % 8)
	}
	for echoed := 0; ; echoed++ {
		if echoed == cutAfter {
			b.cut(tc, ar.id)
			return
		}
		op, p, err := wsReadFrame(brw.Reader, true)
		if err != nil {
			return
		}
		if op == wsOpPing {
			op = wsOpPong
		}
		if err := wsWriteFrame(c, op, p, false); err != nil || op == wsOpClose {
			return
		}
	}
}

// sleepCtx waits d, or less if a context ends; it reports whether the full
// wait elapsed.
func sleepCtx(d time.Duration, a, b context.Context) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.Done():
	case <-b.Done():
	}
	return false
}

// trackingListener registers every accepted connection with its life, so
// a kill can reset them all, hijacked ones included.
type trackingListener struct {
	net.Listener
	b    *backend
	life *life
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, errors.New("not a TCP connection")
	}
	tc := &trackedConn{TCPConn: tcp, b: l.b, life: l.life}
	l.b.mu.Lock()
	alive := l.b.up && l.b.life == l.life
	if alive {
		l.life.conns[tc] = struct{}{}
	}
	l.b.mu.Unlock()
	if !alive {
		tc.reset()
		return nil, net.ErrClosed
	}
	return tc, nil
}

// trackedConn is an accepted connection that can be reset.
type trackedConn struct {
	*net.TCPConn
	b    *backend
	life *life
}

func (c *trackedConn) Close() error {
	c.b.mu.Lock()
	delete(c.life.conns, c)
	c.b.mu.Unlock()
	return c.TCPConn.Close()
}

// reset closes the connection with an RST instead of a FIN, dropping
// anything still unsent.
func (c *trackedConn) reset() {
	_ = c.TCPConn.SetLinger(0)
	_ = c.Close()
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
