package proxy_test

// Retry tests: what is retried, where to, how often, and when the loop stops.
// Upstreams are raw sockets that count what they received, so "not retried"
// is checked at the upstream, not inferred from the client's status.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// noBackoffRetry retries at once, so tests do not wait for backoff.
var noBackoffRetry = proxy.RetryPolicy{Backoff: time.Microsecond, BackoffMax: time.Microsecond}

// sendFresh does one request with a fresh client and returns status and body.
func sendFresh(t *testing.T, method, url string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := isolatedClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func TestRetryPOSTAfterDialErrorArrivesIntact(t *testing.T) {
	t.Parallel()
	good := newRecordingUpstream(t, nil)
	px := newProxy(t, proxy.Config{
		Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(refusedAddr(t)), upstream.New(good.Addr)),
		Retry:     noBackoffRetry,
		Logger:    discardLogger(),
	})
	payload := detBytes(512<<10, 11)
	code, body := sendFresh(t, "POST", px.URL+"/p", payload, nil)
	if code != 200 || body != "ok" {
		t.Fatalf("got %d %q, want 200 from the second upstream", code, body)
	}
	r := good.only(t)
	if r.BodyLen != int64(len(payload)) || r.BodySHA != sha256Hex(payload) {
		t.Errorf("retried body: %d bytes sha %s, want %d sha %s", r.BodyLen, r.BodySHA, len(payload), sha256Hex(payload))
	}
}

func TestRetryPOSTNotRetriedAfterReset(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	b := newRecordingUpstream(t, resetAfterRequest)
	px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: noBackoffRetry, Logger: discardLogger()})
	code, _ := sendFresh(t, "POST", px.URL+"/p", []byte("charge the card once"), nil)
	if code != http.StatusBadGateway {
		t.Errorf("status %d, want 502", code)
	}
	if n := a.count() + b.count(); n != 1 {
		t.Errorf("upstreams saw the POST %d times (a=%d b=%d), want exactly once", n, a.count(), b.count())
	}
}

func TestRetryGETAfterResetGoesToOtherUpstream(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	b := newRecordingUpstream(t, nil)
	px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: noBackoffRetry, Logger: discardLogger()})
	code, body := sendFresh(t, "GET", px.URL+"/g?x=1", nil, nil)
	if code != 200 || body != "ok" {
		t.Fatalf("got %d %q", code, body)
	}
	if a.count() != 1 || b.count() != 1 {
		t.Errorf("a=%d b=%d, want 1 and 1", a.count(), b.count())
	}
	if got := b.only(t).Target; got != "/g?x=1" {
		t.Errorf("retried target %q", got)
	}
}

func TestRetryIdempotencyKeyPOSTAfterReset(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	b := newRecordingUpstream(t, nil)
	px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: noBackoffRetry, Logger: discardLogger()})
	payload := detBytes(4096, 12)
	code, _ := sendFresh(t, "POST", px.URL+"/k", payload, map[string]string{"Idempotency-Key": "8e03978e-40d5"})
	if code != 200 {
		t.Fatalf("status %d, want 200 after a retry", code)
	}
	if a.count() != 1 || b.count() != 1 {
		t.Fatalf("a=%d b=%d, want 1 and 1", a.count(), b.count())
	}
	r := b.only(t)
	if r.BodySHA != sha256Hex(payload) || r.Header.Get("Idempotency-Key") != "8e03978e-40d5" {
		t.Errorf("retried request: body %d bytes (exact: %v), key %q", r.BodyLen, r.BodySHA == sha256Hex(payload), r.Header.Get("Idempotency-Key"))
	}
}

// A PUT is idempotent, but once an over-limit (streaming) body has been sent
// it cannot be sent again; before any byte went out (dial error) it can.
func TestRetryStreamingPUT(t *testing.T) {
	t.Parallel()
	const limit = 1024
	payload := detBytes(64<<10, 13)

	t.Run("not retried after reset", func(t *testing.T) {
		t.Parallel()
		a := newRecordingUpstream(t, resetAfterRequest)
		b := newRecordingUpstream(t, nil)
		px := newProxy(t, proxy.Config{
			Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: noBackoffRetry, MaxRequestBuffer: limit, Logger: discardLogger(),
		})
		code, _ := sendFresh(t, "PUT", px.URL+"/s", payload, nil)
		if code != http.StatusBadGateway {
			t.Errorf("status %d, want 502", code)
		}
		if a.count() != 1 || b.count() != 0 {
			t.Errorf("a=%d b=%d: a streamed body was sent again", a.count(), b.count())
		}
	})

	t.Run("retried after dial error", func(t *testing.T) {
		t.Parallel()
		b := newRecordingUpstream(t, nil)
		px := newProxy(t, proxy.Config{
			Upstreams:        upstream.NewPool(firstUsableSelector{}, upstream.New(refusedAddr(t)), upstream.New(b.Addr)),
			Retry:            noBackoffRetry,
			MaxRequestBuffer: limit,
			Logger:           discardLogger(),
		})
		code, _ := sendFresh(t, "PUT", px.URL+"/s", payload, nil)
		if code != 200 {
			t.Fatalf("status %d, want 200 from the second upstream", code)
		}
		r := b.only(t)
		if r.BodySHA != sha256Hex(payload) {
			t.Errorf("body after dial-error retry: %d bytes, not the %d sent", r.BodyLen, len(payload))
		}
		if got := r.Header.Get("Content-Length"); got != "65536" {
			t.Errorf("Content-Length %q", got)
		}
	})

	t.Run("POST streaming retried after dial error", func(t *testing.T) {
		t.Parallel()
		b := newRecordingUpstream(t, nil)
		px := newProxy(t, proxy.Config{
			Upstreams:        upstream.NewPool(firstUsableSelector{}, upstream.New(refusedAddr(t)), upstream.New(b.Addr)),
			Retry:            noBackoffRetry,
			MaxRequestBuffer: -1, // nothing buffered
			Logger:           discardLogger(),
		})
		code, _ := sendFresh(t, "POST", px.URL+"/s", payload, nil)
		if code != 200 || b.only(t).BodySHA != sha256Hex(payload) {
			t.Fatalf("status %d; body not intact after a dial-error retry", code)
		}
	})
}

// answer503 answers with a 503 carrying a recognisable body.
func answer503With(body string) func(net.Conn, *recordedRequest) {
	return answerWith("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Type: text/plain\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}

func TestRetryStatuses(t *testing.T) {
	t.Parallel()
	policy := noBackoffRetry
	policy.Statuses = []int{503}

	t.Run("GET retried to the other upstream", func(t *testing.T) {
		t.Parallel()
		a := newRecordingUpstream(t, answer503With("busy-a"))
		b := newRecordingUpstream(t, nil)
		px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: policy, Logger: discardLogger()})
		code, body := sendFresh(t, "GET", px.URL+"/", nil, nil)
		if code != 200 || body != "ok" {
			t.Errorf("got %d %q, want 200 ok from the other upstream", code, body)
		}
		if a.count() != 1 || b.count() != 1 {
			t.Errorf("a=%d b=%d", a.count(), b.count())
		}
	})

	t.Run("POST not retried, client gets the 503", func(t *testing.T) {
		t.Parallel()
		a := newRecordingUpstream(t, answer503With("busy-a"))
		b := newRecordingUpstream(t, nil)
		px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: policy, Logger: discardLogger()})
		code, body := sendFresh(t, "POST", px.URL+"/", []byte("x"), nil)
		if code != 503 || body != "busy-a" {
			t.Errorf("got %d %q, want the upstream's 503 busy-a", code, body)
		}
		if a.count() != 1 || b.count() != 0 {
			t.Errorf("a=%d b=%d, want 1 and 0", a.count(), b.count())
		}
	})

	t.Run("attempts run out: the upstream's own 503", func(t *testing.T) {
		t.Parallel()
		a := newRecordingUpstream(t, answer503With("busy-a"))
		b := newRecordingUpstream(t, answer503With("busy-b"))
		p := policy
		p.Retries = 1
		px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr, b.Addr), Retry: p, Logger: discardLogger()})
		req, _ := http.NewRequest("GET", px.URL+"/", nil)
		res, err := isolatedClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 503 || string(body) != "busy-b" || res.Header.Get("Retry-After") != "7" {
			t.Errorf("got %d %q Retry-After %q, want the last upstream's 503 busy-b as it was",
				res.StatusCode, body, res.Header.Get("Retry-After"))
		}
		if a.count() != 1 || b.count() != 1 {
			t.Errorf("a=%d b=%d, want 1 and 1 (Retries: 1)", a.count(), b.count())
		}
	})
}

// attemptOrder records which upstream saw a request, in order.
type attemptOrder struct {
	mu    sync.Mutex
	order []string
}

func (o *attemptOrder) act(name string, then func(net.Conn, *recordedRequest)) func(net.Conn, *recordedRequest) {
	return func(c net.Conn, r *recordedRequest) {
		o.mu.Lock()
		o.order = append(o.order, name)
		o.mu.Unlock()
		then(c, r)
	}
}

func (o *attemptOrder) get() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.order, ",")
}

func TestRetryNeverPicksAFailedUpstreamAgain(t *testing.T) {
	t.Parallel()

	// A policy that always prefers the first usable upstream would pick A
	// three times if the proxy did not exclude upstreams that failed.
	t.Run("first-usable policy, resets", func(t *testing.T) {
		t.Parallel()
		var o attemptOrder
		a := newRecordingUpstream(t, o.act("a", resetAfterRequest))
		b := newRecordingUpstream(t, o.act("b", resetAfterRequest))
		c := newRecordingUpstream(t, o.act("c", answerWith(cannedOK200)))
		px := newProxy(t, proxy.Config{
			Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(a.Addr), upstream.New(b.Addr), upstream.New(c.Addr)),
			Retry:     noBackoffRetry,
			Logger:    discardLogger(),
		})
		code, _ := sendFresh(t, "GET", px.URL+"/", nil, nil)
		if code != 200 || o.get() != "a,b,c" {
			t.Errorf("status %d, order %q, want 200 via a,b,c", code, o.get())
		}
	})

	t.Run("round robin, first two refuse", func(t *testing.T) {
		t.Parallel()
		c := newRecordingUpstream(t, nil)
		alog, lines := jsonAccessLog(t)
		px := newProxy(t, proxy.Config{
			Upstreams: poolOfAddrs(refusedAddr(t), refusedAddr(t), c.Addr),
			Retry:     noBackoffRetry,
			AccessLog: alog,
			Logger:    discardLogger(),
		})
		// Retries start at a random usable upstream (round robin's turn
		// order is left to fresh requests), so a request takes one to
		// three attempts; with three allowed (Retries 2), any repeat of a
		// refused upstream could end in a 502.
		const n = 20
		for i := range n {
			if code, _ := sendFresh(t, "GET", px.URL+"/", nil, nil); code != 200 {
				t.Fatalf("request %d: status %d", i, code)
			}
		}
		if c.count() != n {
			t.Errorf("the answering upstream saw %d of %d requests", c.count(), n)
		}
		for _, l := range lines(n) {
			if a := l["attempts"].(float64); a > 3 || l["upstream"] != c.Addr {
				t.Errorf("access line %v, want at most 3 attempts ending at %s", l, c.Addr)
			}
		}
	})

	t.Run("every upstream failed once: tried again only then", func(t *testing.T) {
		t.Parallel()
		var o attemptOrder
		a := newRecordingUpstream(t, o.act("a", resetAfterRequest))
		b := newRecordingUpstream(t, o.act("b", resetAfterRequest))
		p := noBackoffRetry
		p.Retries = 3
		px := newProxy(t, proxy.Config{
			Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(a.Addr), upstream.New(b.Addr)),
			Retry:     p,
			Logger:    discardLogger(),
		})
		code, _ := sendFresh(t, "GET", px.URL+"/", nil, nil)
		if code != http.StatusBadGateway {
			t.Errorf("status %d, want 502", code)
		}
		if got := o.get(); !strings.HasPrefix(got, "a,b,") || strings.Count(got, ",") != 3 {
			t.Errorf("order %q, want a,b first and 4 attempts in all", got)
		}
	})
}

// The backoff wait must end as soon as the client goes away: the handler
// returns promptly although the backoff is up to 20 s. (The wait is random in
// [0, 20s), so a proxy that ignored the client would still pass by chance
// about 3% of the time; a correct one never fails.)
func TestRetryBackoffEndsWhenClientLeaves(t *testing.T) {
	t.Parallel()
	returned := make(chan time.Time, 1)
	alog, lines := jsonAccessLog(t)
	px, _ := startWrappedProxy(t, proxy.Config{
		Upstreams: poolOfAddrs(refusedAddr(t)),
		// TryDuration longer than any wait, so the proxy does not give up
		// on its own before the client leaves.
		Retry:     proxy.RetryPolicy{Retries: 10, Backoff: 20 * time.Second, BackoffMax: 20 * time.Second, TryDuration: time.Minute},
		AccessLog: alog,
		Logger:    discardLogger(),
	}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Deferred: a request whose client left ends in an abort
			// (panic(http.ErrAbortHandler)), which unwinds through here.
			defer func() { returned <- time.Now() }()
			h.ServeHTTP(w, r)
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", px.URL+"/wait", nil)
	errc := make(chan error, 1)
	go func() {
		res, err := isolatedClient(t).Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	time.Sleep(150 * time.Millisecond) // first dial refused at once; now in backoff
	cancelled := time.Now()
	cancel()
	<-errc
	select {
	case at := <-returned:
		if d := at.Sub(cancelled); d > 500*time.Millisecond {
			t.Errorf("handler returned %v after the client left, want < 500ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler still waiting in backoff 5s after the client left")
	}
	if l := lines(1)[0]; l["status"] != float64(499) {
		t.Errorf("access status %v, want 499", l["status"])
	}
}

// TryDuration stops further attempts: each attempt takes 150ms to fail, so
// with TryDuration 250ms only a second attempt may start.
func TestRetryTryDurationStopsAttempts(t *testing.T) {
	t.Parallel()
	slowReset := func(c net.Conn, r *recordedRequest) {
		time.Sleep(150 * time.Millisecond)
		resetAfterRequest(c, r)
	}
	a := newRecordingUpstream(t, slowReset)
	p := noBackoffRetry
	p.Retries = 10
	p.TryDuration = 250 * time.Millisecond
	px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr), Retry: p, Logger: discardLogger()})
	start := time.Now()
	code, _ := sendFresh(t, "GET", px.URL+"/", nil, nil)
	if code != http.StatusBadGateway {
		t.Errorf("status %d, want 502", code)
	}
	if n := a.count(); n < 1 || n > 2 {
		t.Errorf("%d attempts within TryDuration 250ms of 150ms each, want at most 2", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

// TryDuration also bounds the backoff: RetryPolicy documents "No new attempt
// starts after it", so a wait that would end past the deadline must not be
// followed by an attempt. (Regression test: 048acfe waited the full random
// backoff, up to 3s here, and then sent the retry anyway.) Four concurrent
// requests each draw their own wait, so a proxy with that bug passes only if
// all four draw a wait under ~150ms (about 1 in 10^5); a correct proxy never
// fails.
func TestRetryBackoffDoesNotOutliveTryDuration(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	b := newRecordingUpstream(t, nil)
	const try = 100 * time.Millisecond
	px := newProxy(t, proxy.Config{
		Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(a.Addr), upstream.New(b.Addr)),
		Retry:     proxy.RetryPolicy{Retries: 3, TryDuration: try, Backoff: 3 * time.Second, BackoffMax: 3 * time.Second},
		Logger:    discardLogger(),
	})
	const n = 4
	c := isolatedClient(t)
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", px.URL+"/", nil)
			req.Header.Set("X-Req", strconv.Itoa(i))
			start := time.Now()
			res, err := c.Do(req)
			took[i] = time.Since(start)
			if err != nil {
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			codes[i] = res.StatusCode
		}()
	}
	wg.Wait()
	first := map[string]time.Time{}
	for _, r := range a.requests() {
		first[r.Header.Get("X-Req")] = r.At
	}
	for _, r := range b.requests() {
		id := r.Header.Get("X-Req")
		if late := r.At.Sub(first[id]); late > try+50*time.Millisecond {
			t.Errorf("request %s: retry started %v after the first attempt, past TryDuration %v", id, late, try)
		}
	}
	for i := range n {
		if took[i] > try+time.Second {
			t.Errorf("request %d took %v with TryDuration %v (status %d)", i, took[i], try, codes[i])
		}
	}
}

func TestRetryDisabled(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	b := newRecordingUpstream(t, nil)
	px := newProxy(t, proxy.Config{
		Upstreams: poolOfAddrs(a.Addr, b.Addr),
		Retry:     proxy.RetryPolicy{Retries: -1, Backoff: time.Microsecond},
		Logger:    discardLogger(),
	})
	code, _ := sendFresh(t, "GET", px.URL+"/", nil, nil)
	if code != http.StatusBadGateway || a.count() != 1 || b.count() != 0 {
		t.Errorf("status %d, a=%d b=%d: want 502 after one attempt", code, a.count(), b.count())
	}

	// A dial error is not retried either.
	px2 := newProxy(t, proxy.Config{
		Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(refusedAddr(t)), upstream.New(b.Addr)),
		Retry:     proxy.RetryPolicy{Retries: -1},
		Logger:    discardLogger(),
	})
	code, _ = sendFresh(t, "GET", px2.URL+"/", nil, nil)
	if code != http.StatusBadGateway || b.count() != 0 {
		t.Errorf("status %d, b=%d: want 502 without a retry", code, b.count())
	}
}

// With a tiny ratio and one retry per second allowed, a burst of failing
// requests gets at most one retry per second it spans.
func TestRetryBudgetCapsRetries(t *testing.T) {
	t.Parallel()
	a := newRecordingUpstream(t, resetAfterRequest)
	p := noBackoffRetry
	p.Retries = 1
	p.BudgetRatio = 0.001 // 20 requests earn 0.02 of a retry
	p.BudgetMinPerSecond = 1
	px := newProxy(t, proxy.Config{Upstreams: poolOfAddrs(a.Addr), Retry: p, Logger: discardLogger()})
	const n = 20
	c := isolatedClient(t)
	startSec := time.Now().Unix()
	for range n {
		res, err := c.Get(px.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	seconds := int(time.Now().Unix()-startSec) + 1
	got := a.count()
	if got < n+1 || got > n+seconds {
		t.Errorf("%d attempts for %d requests over %d second window(s): want between %d and %d", got, n, seconds, n+1, n+seconds)
	}
}

// The default transport's dial error is a typed *DialError: a custom
// transport that does not wrap it is still safe (no retry of a POST after a
// plain error), and one that does gets dial-error retries.
func TestRetryCustomTransportDialError(t *testing.T) {
	t.Parallel()
	b := newRecordingUpstream(t, nil)
	refused := refusedAddr(t)
	plain := &http.Transport{Proxy: nil, DisableCompression: true}
	defer plain.CloseIdleConnections()
	px := newProxy(t, proxy.Config{
		Upstreams: upstream.NewPool(firstUsableSelector{}, upstream.New(refused), upstream.New(b.Addr)),
		Transport: plain,
		Retry:     noBackoffRetry,
		Logger:    discardLogger(),
	})
	code, _ := sendFresh(t, "POST", px.URL+"/", []byte("once"), nil)
	if code != http.StatusBadGateway || b.count() != 0 {
		t.Errorf("status %d, b=%d: an unwrapped dial error is not known to be safe for a POST", code, b.count())
	}
}
