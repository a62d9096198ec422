package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The HTTP check sends the configured request and judges status and body.
func TestActiveHTTPCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var status atomic.Int32
	status.Store(204)
	var body atomic.Value
	body.Store("all OK here")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "HEAD" && r.Method != "GET" || r.URL.RequestURI() != "/health?deep=1" ||
			r.Host != "svc.internal" || r.Header.Get("X-Check") != "yes" {
			http.Error(w, "bad check request: "+r.Method+" "+r.Host+" "+r.URL.String(), 400)
			return
		}
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, body.Load().(string))
	}))
	defer srv.Close()
	tr := newTransport(t)
	h := newHost(srv.Listener.Addr().String())
	mk := func(a ActiveHealth) *checker {
		a.Transport = tr
		ac, err := a.compile()
		if err != nil {
			t.Fatal(err)
		}
		return newChecker(h, "http", ac, "")
	}
	base := ActiveHealth{Path: "/health?deep=1", Host: "svc.internal", Header: http.Header{"X-Check": {"yes"}}}
	ctx := context.Background()

	c := mk(base)
	if err := c.check(ctx); err != nil {
		t.Errorf("204 against default 2xx: %v", err)
	}
	status.Store(503)
	if err := c.check(ctx); err == nil || !strings.Contains(err.Error(), "status 503, want 2xx") {
		t.Errorf("503: %v", err)
	}
	status.Store(200)

	exact := base
	exact.ExpectStatus, _ = ParseStatuses("200,3xx")
	exact.ExpectBody = `OK\b`
	exact.Method = "GET"
	c = mk(exact)
	if err := c.check(ctx); err != nil {
		t.Errorf("body match: %v", err)
	}
	body.Store("degraded")
	if err := c.check(ctx); err == nil || !strings.Contains(err.Error(), "body does not match") {
		t.Errorf("body mismatch: %v", err)
	}

	// Port override: the check goes elsewhere than the traffic.
	other := base
	other.Port = 1 // nothing listens there
	if err := mk(other).check(ctx); err == nil {
		t.Error("check on port 1 passed")
	}
}

func TestActiveTCPCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ac, _ := ActiveHealth{TCP: true, Timeout: time.Second}.compile()
	c := newChecker(newHost(addr), "http", ac, "")
	if err := c.check(context.Background()); err != nil {
		t.Errorf("listening: %v", err)
	}
	ln.Close()
	if err := c.check(context.Background()); err == nil {
		t.Error("closed port passed")
	}
}

// Rise and fall count consecutive results: an interleaved pass resets the
// failure run.
func TestActiveRiseFall(t *testing.T) {
	ac, _ := ActiveHealth{Rise: 2, Fall: 3}.compile()
	c := newChecker(newHost("x:1"), "http", ac, "")
	bad := io.EOF
	steps := []struct {
		err     error
		healthy bool
	}{
		{bad, true}, {bad, true}, {nil, true}, {bad, true}, {bad, true}, {bad, false}, // 3 in a row
		{nil, false}, {bad, false}, {nil, false}, {nil, true}, // 2 passes in a row
	}
	for i, s := range steps {
		c.report(s.err)
		if got := c.healthy.Load(); got != s.healthy {
			t.Fatalf("step %d: healthy=%v, want %v", i, got, s.healthy)
		}
	}
	if st := c.status(); st.Checks != uint64(len(steps)) || st.LastError != "EOF" || st.Passes != 2 {
		t.Errorf("status %+v", st)
	}
}

// An upstream killed during load is marked down by active checks within
// two intervals and comes back, under slow start, when it recovers.
func TestActiveDetectsKillAndRecovery(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	const interval = 100 * time.Millisecond
	a, b := newBackend(t), newBackend(t)
	tr := newTransport(t)
	reg := NewRegistry()
	p, err := NewPoolWith(PoolConfig{
		Policy: &RoundRobin{}, Upstreams: []*Upstream{New(a.addr), New(b.addr)}, Registry: reg,
		Active:    &ActiveHealth{Path: "/", Interval: interval, Jitter: 10 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 1, Transport: tr},
		SlowStart: 400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	eventually(t, time.Second, "first checks", func() bool { return statusOf(p, b.addr).Active.Checks > 0 })

	b.kill()
	took := eventually(t, 3*interval, "marked down", func() bool { return !statusOf(p, b.addr).Healthy })
	if took > 2*interval {
		t.Errorf("took %v to mark down, want within two intervals (%v)", took, 2*interval)
	}
	st := statusOf(p, b.addr)
	if len(st.Reasons) != 1 || !strings.Contains(st.Reasons[0], "active check failing") {
		t.Errorf("reasons %q", st.Reasons)
	}
	for range 20 {
		if u, _, err := proxyOnce(p, tr); err != nil || u.Addr != a.addr {
			t.Fatalf("request went to %v: %v", u.Addr, err)
		}
	}

	b.revive()
	eventually(t, 3*interval, "back up", func() bool { return statusOf(p, b.addr).Healthy })
	if f := statusOf(p, b.addr).SlowStart; f >= 1 {
		t.Errorf("slow start factor %v right after recovery", f)
	}
	hits := b.hits.Load()
	for range 100 {
		if _, _, err := proxyOnce(p, tr); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.hits.Load() - hits; n == 0 || n >= 50 {
		t.Errorf("recovered upstream got %d of 100 during slow start, want some but under half", n)
	}
}

// Pools checking an address the same way share one checker; a different
// check gets its own; the last pool to close stops them.
func TestActiveCheckerShared(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var checks atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			checks.Add(1)
		}
	}))
	defer srv.Close()
	tr := newTransport(t)
	reg := NewRegistry()
	hc := &ActiveHealth{Path: "/health", Interval: 50 * time.Millisecond, Jitter: -1, Transport: tr}
	mk := func(a *ActiveHealth) *Pool {
		p, err := NewPoolWith(PoolConfig{Upstreams: []*Upstream{New(srv.Listener.Addr().String())}, Registry: reg, Active: a})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p1, p2 := mk(hc), mk(hc)
	if n := reg.Checkers(); n != 1 {
		t.Errorf("%d checkers for one address and one check", n)
	}
	time.Sleep(500 * time.Millisecond)
	if n := checks.Load(); n < 7 || n > 13 {
		t.Errorf("%d checks in 500ms at a 50ms interval with two pools, want about 10", n)
	}
	other := *hc
	other.Path = "/other"
	p3 := mk(&other)
	if n := reg.Checkers(); n != 2 {
		t.Errorf("%d checkers, want 2 for two different checks", n)
	}
	p1.Close()
	if n := reg.Checkers(); n != 2 {
		t.Errorf("closing one of two sharing pools: %d checkers left, want 2", n)
	}
	p2.Close()
	p3.Close()
	if reg.Checkers() != 0 || reg.Len() != 0 {
		t.Errorf("after closing all: %d checkers, %d addresses", reg.Checkers(), reg.Len())
	}
}
