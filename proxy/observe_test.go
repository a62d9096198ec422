package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// observed collects the summaries Config.Observe receives.
type observed struct {
	mu  sync.Mutex
	got []proxy.Summary
}

func (o *observed) add(s proxy.Summary) { o.mu.Lock(); o.got = append(o.got, s); o.mu.Unlock() }

// wait returns the first n summaries, failing if they do not come within 5s
// (Observe runs after the response, so the client may see it first).
func (o *observed) wait(t *testing.T, n int) []proxy.Summary {
	t.Helper()
	if !pollUntil(5*time.Second, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.got) >= n }) {
		t.Fatalf("want %d summaries, got %d", n, len(o.got))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]proxy.Summary(nil), o.got[:n]...)
}

func TestObserveSummaries(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(201)
		io.WriteString(w, "got "+string(b))
	}))
	defer be.Close()

	t.Run("success", func(t *testing.T) {
		var o observed
		px := newProxy(t, proxy.Config{Observe: o.add}, be)
		res, err := http.Post(px.URL+"/x", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		s := o.wait(t, 1)[0]
		if s.Method != "POST" || s.Status != 201 || s.Upstream != serverAddr(be) || s.Attempts != 1 ||
			s.BytesIn != 5 || s.BytesOut != int64(len("got hello")) || s.Err != nil || s.Aborted ||
			s.Duration <= 0 || s.UpstreamLatency <= 0 || s.UpstreamLatency > s.Duration {
			t.Fatalf("summary %+v", s)
		}
	})

	t.Run("retried after a refused dial", func(t *testing.T) {
		var o observed
		dead := refusedAddr(t)
		cfg := proxy.Config{Observe: o.add, Upstreams: upstream.NewPool(firstUsableSelector{},
			upstream.New(dead), upstream.New(serverAddr(be)))}
		px := newProxy(t, cfg)
		res, err := http.Get(px.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		s := o.wait(t, 1)[0]
		if s.Status != 201 || s.Attempts != 2 || s.Upstream != serverAddr(be) || s.Err != nil {
			t.Fatalf("summary %+v", s)
		}
	})

	t.Run("all upstreams down", func(t *testing.T) {
		var o observed
		cfg := proxy.Config{Observe: o.add, Upstreams: poolOfAddrs(refusedAddr(t))}
		px := newProxy(t, cfg)
		res, err := http.Get(px.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		s := o.wait(t, 1)[0]
		if res.StatusCode != 502 || s.Status != 502 || s.Attempts < 2 || s.Err == nil {
			t.Fatalf("status %d, summary %+v", res.StatusCode, s)
		}
	})

	t.Run("bad target never reaches an upstream", func(t *testing.T) {
		var o observed
		px := newProxy(t, proxy.Config{Observe: o.add}, be)
		res, _ := rawRequestResponse(t, serverAddr(px), "GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n")
		s := o.wait(t, 1)[0]
		if res.StatusCode != 400 || s.Status != 400 || s.Attempts != 0 || s.Upstream != "" {
			t.Fatalf("status %d, summary %+v", res.StatusCode, s)
		}
	})
}

// TestResponseGoesOutBeforeObserve: the bookkeeping after a response (the
// access log, metrics) runs after the client has the whole response, so a
// slow log does not delay it. sluice's HTTP/1.1 loop sends a response as
// soon as its Content-Length is reached; net/http's server holds it until
// the handler returns.
func TestResponseGoesOutBeforeObserve(t *testing.T) {
	if frontIsNetHTTP {
		t.Skip("net/http's server sends the response when the handler returns")
	}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "answer")
	}))
	defer be.Close()
	release := make(chan struct{})
	observing := make(chan struct{}, 1)
	slowLog := func(proxy.Summary) {
		observing <- struct{}{}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	}
	px := newProxy(t, proxy.Config{Observe: slowLog}, be)
	defer close(release) // before the proxy's cleanup waits for the handler
	client := &http.Client{Timeout: 2 * time.Second}
	res, err := client.Get(px.URL + "/")
	if err != nil {
		t.Fatalf("the response waited for the observer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(b) != "answer" {
		t.Fatalf("got %q, %v while the observer ran", b, err)
	}
	select {
	case <-observing:
	case <-time.After(5 * time.Second):
		t.Fatal("the observer was never called")
	}
}
