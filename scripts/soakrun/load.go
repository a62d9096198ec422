package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loader is the client side: workers that each send one request at a time
// through the proxy and classify what came back.
type loader struct {
	base       string // http://proxy
	addr       string // proxy host:port, for WebSockets
	client     *http.Client
	h2client   *http.Client // h2c prior knowledge; half of the GETs when set
	reg        *registry
	st         *stats
	mix        mix
	uploadSize int
	reqTimeout time.Duration
	seed       uint64

	ids  atomic.Uint64
	stop atomic.Bool

	// Client errors wait here until chaos has surely recorded whether it
	// cut that response (a kill records its cuts just after the resets).
	pmu     sync.Mutex
	pending []pendingFailure
}

type pendingFailure struct {
	k      kind
	id     uint64
	detail string
	at     time.Time
}

// classifyAfter is how long a client error waits before it is classified.
const classifyAfter = 2 * time.Second

func (l *loader) worker(n int) {
	rng := rand.New(rand.NewPCG(l.seed, uint64(n)+1))
	var upload []byte
	for !l.stop.Load() {
		switch k := l.mix.pick(rng); k {
		case kGet:
			l.doGet(rng)
		case kSSE:
			l.doSSE(rng)
		case kWS:
			l.doWS(rng)
		case kPost, kPost64:
			if upload == nil {
				upload = make([]byte, max(l.uploadSize, 64<<10))
				cc := rand.NewChaCha8([32]byte{byte(n), byte(l.seed), byte(l.seed >> 8)})
				_, _ = cc.Read(upload)
			}
			if k == kPost {
				l.doPost(kPost, upload[:l.uploadSize])
			} else {
				l.doPost(kPost64, upload[:1+rng.IntN(64<<10)])
			}
		}
	}
}

// clientError records an error the client saw; it is classified later as
// failed-visibly (chaos cut this response after headers) or unexplained.
func (l *loader) clientError(k kind, id uint64, detail string) {
	l.pmu.Lock()
	l.pending = append(l.pending, pendingFailure{k, id, detail, time.Now()})
	l.pmu.Unlock()
}

// classify settles the client errors older than classifyAfter, or all of
// them with force.
func (l *loader) classify(force bool) {
	cutoff := time.Now().Add(-classifyAfter)
	l.pmu.Lock()
	var ready []pendingFailure
	keep := l.pending[:0]
	for _, p := range l.pending {
		if force || p.at.Before(cutoff) {
			ready = append(ready, p)
		} else {
			keep = append(keep, p)
		}
	}
	l.pending = keep
	l.pmu.Unlock()
	for _, p := range ready {
		if why := l.reg.cutReason(p.id); why != "" {
			l.st.record(p.k, oVisible, p.id, p.detail+" — "+why)
		} else {
			l.st.record(p.k, oUnexplained, p.id, p.detail)
		}
	}
}

func (l *loader) pendingCount() int {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	return len(l.pending)
}

func (l *loader) newRequest(ctx context.Context, method, path string, id uint64, body io.Reader) *http.Request {
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, body)
	if err != nil {
		panic(err) // our own URL: cannot fail
	}
	req.Header.Set("X-Request-Id", strconv.FormatUint(id, 10))
	return req
}

// errorStatus records a response that is not the upstream's.
func (l *loader) errorStatus(k kind, id uint64, res *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 256))
	l.st.status(k, res.StatusCode)
	l.st.record(k, oStatus, id, fmt.Sprintf("status %d: %s", res.StatusCode, strings.TrimSpace(string(b))))
}

func (l *loader) doGet(rng *rand.Rand) {
	id := l.ids.Add(1)
	defer l.st.since(kGet, time.Now())
	size := rng.IntN(32<<10 + 1)
	chunked := 0
	if rng.IntN(4) == 0 {
		chunked = 1
	}
	// Half the GETs go over h2c: sluice's HTTP/2 server, its coalescing
	// writer and stream resets, under the same chaos.
	client, proto := l.client, "HTTP/1.1"
	if l.h2client != nil && rng.IntN(2) == 0 {
		client, proto = l.h2client, "h2c"
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.reqTimeout)
	defer cancel()
	req := l.newRequest(ctx, http.MethodGet, fmt.Sprintf("/blob?id=%d&size=%d&chunked=%d", id, size, chunked), id, nil)
	res, err := client.Do(req)
	if err != nil {
		l.clientError(kGet, id, proto+": no response: "+err.Error())
		return
	}
	defer res.Body.Close()
	if proto == "h2c" && res.ProtoMajor != 2 {
		l.st.record(kGet, oUnexplained, id, "asked over h2c, answered over "+res.Proto)
		return
	}
	if res.StatusCode != http.StatusOK {
		l.errorStatus(kGet, id, res)
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(res.Body, int64(size)+1))
	if err != nil {
		l.clientError(kGet, id, fmt.Sprintf("%s: body broke after %d of %d bytes (chunked=%d): %v", proto, n, size, chunked, err))
		return
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != int64(size) || sum != res.Header.Get("X-Body-Sha256") {
		l.st.record(kGet, oSilent, id, fmt.Sprintf("%s: clean end after %d of %d bytes (chunked=%d, Content-Length %d, hash ok %v, upstream %s)",
			proto, n, size, chunked, res.ContentLength, sum == res.Header.Get("X-Body-Sha256"), res.Header.Get("X-Upstream")))
		return
	}
	l.st.record(kGet, oOK, id, "")
}

func (l *loader) doSSE(rng *rand.Rand) {
	id := l.ids.Add(1)
	defer l.st.since(kSSE, time.Now())
	n := 10 + rng.IntN(31)
	interval := 5 + rng.IntN(21)
	ctx, cancel := context.WithTimeout(context.Background(), l.reqTimeout)
	defer cancel()
	req := l.newRequest(ctx, http.MethodGet, fmt.Sprintf("/sse?id=%d&n=%d&interval=%d", id, n, interval), id, nil)
	req.Header.Set("Accept", "text/event-stream")
	res, err := l.client.Do(req)
	if err != nil {
		l.clientError(kSSE, id, "no response: "+err.Error())
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		l.errorStatus(kSSE, id, res)
		return
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		l.st.record(kSSE, oSilent, id, "Content-Type "+ct)
		return
	}
	br := bufio.NewReader(res.Body)
	next := 0
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF && line == "" {
			break
		}
		if err == io.EOF {
			l.st.record(kSSE, oSilent, id, fmt.Sprintf("clean end in the middle of a line after %d of %d events", next, n))
			return
		}
		if err != nil {
			l.clientError(kSSE, id, fmt.Sprintf("stream broke after %d of %d events: %v", next, n, err))
			return
		}
		if rest, ok := strings.CutPrefix(line, "data: "); ok {
			var seq int
			var rid uint64
			if _, err := fmt.Sscanf(rest, "seq=%d req=%d", &seq, &rid); err != nil || seq != next || rid != id {
				l.st.record(kSSE, oSilent, id, fmt.Sprintf("event %q where seq=%d req=%d was due", strings.TrimSpace(line), next, id))
				return
			}
			next++
		}
	}
	if next != n {
		l.st.record(kSSE, oSilent, id, fmt.Sprintf("clean end after %d of %d events (upstream %s)", next, n, res.Header.Get("X-Upstream")))
		return
	}
	l.st.record(kSSE, oOK, id, "")
}

func (l *loader) doWS(rng *rand.Rand) {
	id := l.ids.Add(1)
	defer l.st.since(kWS, time.Now())
	conn, err := net.DialTimeout("tcp", l.addr, 5*time.Second)
	if err != nil {
		l.clientError(kWS, id, "dial proxy: "+err.Error())
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(l.reqTimeout))
	var kb [16]byte
	for i := range kb {
		kb[i] = byte(rng.Uint32())
	}
	key := base64.StdEncoding.EncodeToString(kb[:])
	_, err = fmt.Fprintf(conn, "GET /ws?id=%d HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nX-Request-Id: %d\r\n\r\n", id, l.addr, key, id)
	if err != nil {
		l.clientError(kWS, id, "sending handshake: "+err.Error())
		return
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		l.clientError(kWS, id, "no handshake response: "+err.Error())
		return
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		l.errorStatus(kWS, id, res)
		res.Body.Close()
		return
	}
	if got := res.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		l.st.record(kWS, oSilent, id, "wrong Sec-WebSocket-Accept "+got)
		return
	}
	k := 5 + rng.IntN(16)
	for i := range k {
		raw := make([]byte, 8+rng.IntN(1024))
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		payload := fmt.Appendf(nil, "%d:%d:%x", id, i, raw)
		if err := wsWriteFrame(conn, wsOpText, payload, true); err != nil {
			l.clientError(kWS, id, fmt.Sprintf("send after %d of %d echoes: %v", i, k, err))
			return
		}
		op, got, err := wsReadFrame(br, false)
		if err != nil {
			l.clientError(kWS, id, fmt.Sprintf("read after %d of %d echoes: %v", i, k, err))
			return
		}
		if op != wsOpText || !bytes.Equal(got, payload) {
			l.st.record(kWS, oSilent, id, fmt.Sprintf("echo %d of %d: opcode %d, %d bytes, want text %d bytes", i, k, op, len(got), len(payload)))
			return
		}
	}
	if err := wsWriteFrame(conn, wsOpClose, []byte{0x03, 0xe8}, true); err != nil {
		l.clientError(kWS, id, "send close: "+err.Error())
		return
	}
	op, _, err := wsReadFrame(br, false)
	if err != nil {
		l.clientError(kWS, id, "read close: "+err.Error())
		return
	}
	if op != wsOpClose {
		l.st.record(kWS, oSilent, id, fmt.Sprintf("opcode %d where the close echo was due", op))
		return
	}
	// After the close handshake the upstream hangs up; the proxy passes
	// that on. Nothing else may arrive.
	if b, err := br.ReadByte(); err == nil {
		l.st.record(kWS, oSilent, id, fmt.Sprintf("byte %#x after the close handshake", b))
		return
	}
	l.st.record(kWS, oOK, id, "")
}

// doPost uploads body (its first bytes overwritten with the id) as kind k.
func (l *loader) doPost(k kind, body []byte) {
	id := l.ids.Add(1)
	defer l.st.since(k, time.Now())
	// Make every upload's body unique, so the hash ties it to its id.
	for i := range min(8, len(body)) {
		body[i] = byte(id >> (8 * i))
	}
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	ctx, cancel := context.WithTimeout(context.Background(), l.reqTimeout)
	defer cancel()
	req := l.newRequest(ctx, http.MethodPost, fmt.Sprintf("/upload?id=%d", id), id, bytes.NewReader(body))
	req.Header.Set("X-Body-Sha256", want)
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := l.client.Do(req)
	if err != nil {
		l.postFailed(id)
		l.clientError(k, id, "no response: "+err.Error())
		return
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusBadRequest {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		l.st.record(k, oSilent, id, "upstream received a corrupted body: "+strings.TrimSpace(string(b)))
		return
	}
	if res.StatusCode != http.StatusOK {
		l.postFailed(id)
		l.errorStatus(k, id, res)
		return
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 512))
	if err != nil {
		l.postFailed(id)
		l.clientError(k, id, "answer broke: "+err.Error())
		return
	}
	if string(b) != "ok\n" || res.Header.Get("X-Body-Sha256") != want {
		l.st.record(k, oSilent, id, fmt.Sprintf("answer %q, hash %s", b, res.Header.Get("X-Body-Sha256")))
		return
	}
	if _, verified := l.reg.postSeen(id); verified == 0 {
		l.st.postOKUnrecorded.Add(1)
	}
	l.st.record(k, oOK, id, "")
}

// postFailed notes an upload the client saw fail although an upstream got
// all of it: its answer was lost (allowed; the client must not resend
// blindly, which is why the proxy must not either).
func (l *loader) postFailed(id uint64) {
	if _, verified := l.reg.postSeen(id); verified > 0 {
		l.st.postAnswerLost.Add(1)
	}
}

// mix is the request mix: weights per kind.
type mix [nKinds]int

func parseMix(s string) (mix, error) {
	var m mix
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.Atoi(val)
		if !ok || err != nil || w < 0 {
			return m, fmt.Errorf("mix %q: want kind=weight,... with kinds get, sse, ws, post, post64", s)
		}
		found := false
		for k := range nKinds {
			if strings.EqualFold(name, kindNames[k]) {
				m[k], found = w, true
			}
		}
		if !found {
			return m, fmt.Errorf("mix: unknown kind %q (want get, sse, ws, post, post64)", name)
		}
	}
	if m.total() == 0 {
		return m, fmt.Errorf("mix %q: all weights are zero", s)
	}
	return m, nil
}

func (m mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

func (m mix) pick(rng *rand.Rand) kind {
	r := rng.IntN(m.total())
	for k, w := range m {
		if r < w {
			return kind(k)
		}
		r -= w
	}
	return kGet
}
