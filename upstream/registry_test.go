package upstream

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A reload builds the new pool from fresh Upstream values before closing
// the old one: counters, ejections and active-check state carry over, and
// the checker keeps running rather than restarting.
func TestRegistrySurvivesReload(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	a, b := newBackend(t), newBackend(t)
	tr := newTransport(t)
	reg := NewRegistry()
	cfg := func() PoolConfig {
		return PoolConfig{
			Upstreams: []*Upstream{New(a.addr), New(b.addr)}, Registry: reg,
			Active:  &ActiveHealth{Path: "/", Interval: 20 * time.Millisecond, Transport: tr},
			Passive: &PassiveHealth{MaxFails: 1, UnhealthyStatus: Statuses{5}, FailDuration: time.Minute},
		}
	}
	old, err := NewPoolWith(cfg())
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, _, err := proxyOnce(old, tr); err != nil {
			t.Fatal(err)
		}
	}
	b.status.Store(500)
	for range 4 {
		proxyOnce(old, tr)
	}
	b.status.Store(0) // active checks only look for 2xx at "/": keep them passing
	if st := statusOf(old, b.addr); !st.Passive.Ejected {
		t.Fatalf("not ejected: %+v", st)
	}
	eventually(t, time.Second, "checks ran", func() bool { return statusOf(old, a.addr).Active.Checks >= 2 })
	checker := old.Upstreams()[0].act

	next, err := NewPoolWith(cfg())
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	if next.Upstreams()[0].act != checker {
		t.Error("reload restarted the active checker")
	}
	sa, sb := statusOf(next, a.addr), statusOf(next, b.addr)
	if sa.Requests < 5 || sb.Requests == 0 || sb.Failures != 1 {
		t.Errorf("counters lost: a %+v b %+v", sa, sb)
	}
	if !sb.Passive.Ejected || sb.Healthy {
		t.Error("ejection lost on reload")
	}
	if sa.Active.Checks < 2 {
		t.Error("active state lost on reload")
	}
	for range 5 {
		if u, _, err := proxyOnce(next, tr); err != nil || u.Addr != a.addr {
			t.Fatalf("new pool sent to %v (%v)", u.Addr, err)
		}
	}

	// A reload that changes the check settings gets its own checker and
	// passive tracker; the counters (per address) still carry over.
	c2 := cfg()
	c2.Active.Path = "/other"
	c2.Passive.MaxFails = 5
	third, _ := NewPoolWith(c2)
	next.Close()
	if third.Upstreams()[0].act == checker || statusOf(third, b.addr).Passive.Ejected {
		t.Error("changed settings reused the old checker or tracker")
	}
	if statusOf(third, a.addr).Requests < 10 {
		t.Error("address counters lost with changed settings")
	}
	third.Close()
	if reg.Len() != 0 || reg.Checkers() != 0 {
		t.Errorf("after the last pool closed: %d addresses, %d checkers", reg.Len(), reg.Checkers())
	}
}

func TestStatusJSON(t *testing.T) {
	reg := NewRegistry()
	u := New("10.0.0.1:80")
	v := New("10.0.0.2:80")
	p, _ := NewPoolWith(PoolConfig{
		Policy: P2C{}, Upstreams: []*Upstream{u, v}, Registry: reg,
		Passive: &PassiveHealth{MaxFails: 1, FailureRatio: 0.5, MaxEjectionPercent: 100},
	})
	defer p.Close()
	for _, o := range []Outcome{{Kind: Success, Status: 200, Latency: 5 * time.Millisecond}, {Kind: Failure}} {
		s := &Selection{}
		s.Tried.Add(v)
		got, _ := p.Select(s)
		p.Release(got, o)
	}
	v.SetDown(true)
	b, err := json.Marshal(p.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"policy":"p2c"`, `"healthy":0`, `"addr":"10.0.0.1:80"`, `"ejected":true`, `"ejected_until":"`,
		`"reasons":["ejected by passive checks until`, `"reasons":["set down"]`, `"requests":2`, `"failures":1`,
		`"latency_ewma_ms":5`, `"latency_p99_ms":5`, `"failure_ratio":0`, `"slow_start":1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
}

func TestLatencyP99(t *testing.T) {
	var l latency
	for i := 1; i <= 1000; i++ {
		l.record(time.Duration(i) * time.Millisecond)
	}
	ewma, p99, n := l.snapshot()
	// The ring holds the last 256 samples: 745..1000ms.
	if n != latencyRing || p99 != 998*time.Millisecond {
		t.Errorf("p99 %v over %d samples", p99, n)
	}
	if ewma < 980*time.Millisecond || ewma > 1000*time.Millisecond {
		t.Errorf("ewma %v", ewma)
	}
}

func TestParseStatuses(t *testing.T) {
	s, err := ParseStatuses("5xx, 429", "404")
	if err != nil || s.String() != "5xx,429,404" {
		t.Fatalf("%v %v", s, err)
	}
	for code, want := range map[int]bool{500: true, 599: true, 429: true, 404: true, 400: false, 200: false} {
		if s.Match(code) != want {
			t.Errorf("Match(%d) = %v", code, !want)
		}
	}
	for _, bad := range []string{"6xx", "99", "abc", "2x"} {
		if _, err := ParseStatuses(bad); err == nil || !strings.Contains(err.Error(), "class like 2xx") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
