package upstream

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func newTestPassive(t *testing.T, cfg PassiveHealth) *passive {
	t.Helper()
	c, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newPassive(newHost("10.0.0.1:80"), c, "k")
}

const sec = int64(time.Second)

// Failures count within a sliding window; old ones fall out of it.
func TestPassiveWindow(t *testing.T) {
	p := newTestPassive(t, PassiveHealth{FailWindow: 10 * time.Second, MaxFails: 3})
	now := 100 * sec
	fail := Outcome{Kind: Failure}
	if _, trip := p.record(fail, now); trip {
		t.Fatal("tripped on 1")
	}
	p.record(fail, now+5*sec)
	// The first failure is 11s old by now: out of the window.
	if _, trip := p.record(fail, now+11*sec); trip {
		t.Fatal("tripped with a failure outside the window")
	}
	if _, trip := p.record(fail, now+12*sec); !trip {
		t.Fatal("3 failures within 10s did not trip")
	}
	// Ignored outcomes and successes never count.
	q := newTestPassive(t, PassiveHealth{MaxFails: 1})
	for range 10 {
		if bad, trip := q.record(Outcome{Kind: Ignored, Status: 502}, now); bad || trip {
			t.Fatal("ignored outcome counted")
		}
	}
}

// Configured statuses and slow answers count as failures.
func TestPassiveStatusAndLatency(t *testing.T) {
	p := newTestPassive(t, PassiveHealth{MaxFails: 1, UnhealthyStatus: Statuses{5, 429}, UnhealthyLatency: time.Second})
	for _, tc := range []struct {
		o   Outcome
		bad bool
	}{
		{Outcome{Kind: Success, Status: 200, Latency: time.Millisecond}, false},
		{Outcome{Kind: Success, Status: 404}, false},
		{Outcome{Kind: Success, Status: 503}, true},
		{Outcome{Kind: Success, Status: 429}, true},
		{Outcome{Kind: Success, Status: 200, Latency: 2 * time.Second}, true},
		{Outcome{Kind: Failure}, true},
		{Outcome{Kind: Ignored, Status: 503, Latency: time.Hour}, false},
	} {
		if got := p.bad(tc.o); got != tc.bad {
			t.Errorf("%+v: bad=%v", tc.o, got)
		}
	}
}

// Failure-ratio ejection: more than half of the last 10 failed, after at
// least 10 requests.
func TestPassiveRatio(t *testing.T) {
	p := newTestPassive(t, PassiveHealth{MaxFails: -1, FailureRatio: 0.5, RatioWindow: 10, RatioMinRequests: 10})
	now := 5 * sec
	ok, fail := Outcome{Kind: Success, Status: 200}, Outcome{Kind: Failure}
	// 6 failures in the first 9 requests: below the minimum count.
	for i := range 9 {
		o := ok
		if i%3 != 0 {
			o = fail
		}
		if _, trip := p.record(o, now); trip {
			t.Fatalf("tripped at request %d, before the minimum", i+1)
		}
	}
	if _, trip := p.record(fail, now); !trip {
		t.Fatal("7 of 10 failed: did not trip")
	}
	// A failure after enough successes does not: 4 of the last 10 failed.
	q := newTestPassive(t, PassiveHealth{MaxFails: -1, FailureRatio: 0.5, RatioWindow: 10, RatioMinRequests: 10})
	for i := range 30 {
		o := ok
		if i%5 < 2 {
			o = fail
		}
		if _, trip := q.record(o, now); trip {
			t.Fatalf("tripped at 40%% failures (request %d)", i+1)
		}
	}
}

// Each ejection that follows soon after the last lasts longer, up to the
// cap; after a quiet spell it starts from the base again.
func TestPassiveEjectionGrows(t *testing.T) {
	base := 10 * time.Second
	p := newTestPassive(t, PassiveHealth{FailDuration: base, MaxEjectionTime: 35 * time.Second})
	now := 1000 * sec
	var got []time.Duration
	for range 5 {
		if !p.eject(now) {
			t.Fatal("eject refused")
		}
		if p.eject(now + 1) {
			t.Fatal("ejected twice")
		}
		d := time.Duration(p.until.Load() - now)
		got = append(got, d)
		now += int64(d) + sec // fails again a second after coming back
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 35 * time.Second, 35 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ejection %d lasted %v, want %v", i+1, got[i], want[i])
		}
	}
	now += int64(36 * time.Second)
	p.eject(now)
	if d := time.Duration(p.until.Load() - now); d != base {
		t.Errorf("after a quiet spell: %v, want %v", d, base)
	}
}

// An upstream killed during load is ejected by passive checks within a few
// requests; once it is back and its ejection is over, traffic returns to
// it under slow start.
func TestPassiveEjectsKilledUpstream(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	bs := []*backend{newBackend(t), newBackend(t), newBackend(t)}
	var ups []*Upstream
	for _, b := range bs {
		ups = append(ups, New(b.addr))
	}
	p, err := NewPoolWith(PoolConfig{
		Policy: &RoundRobin{}, Upstreams: ups, Registry: NewRegistry(),
		Passive:   &PassiveHealth{MaxFails: 2, FailDuration: 300 * time.Millisecond},
		SlowStart: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr := newTransport(t)
	for range 30 {
		if _, _, err := proxyOnce(p, tr); err != nil {
			t.Fatal(err)
		}
	}
	victim := bs[1]
	victim.kill()
	failures := 0
	for range 60 {
		if _, _, err := proxyOnce(p, tr); err != nil {
			failures++
		}
	}
	if failures != 2 {
		t.Errorf("%d requests failed before the ejection, want MaxFails = 2", failures)
	}
	st := statusOf(p, victim.addr)
	if st.Healthy || st.Passive == nil || !st.Passive.Ejected || len(st.Reasons) != 1 {
		t.Fatalf("victim status %+v", st)
	}

	victim.revive()
	before := victim.hits.Load()
	// After the ejection it gets traffic again, first a little (slow
	// start), then its full share.
	eventually(t, 2*time.Second, "ejection over", func() bool { return statusOf(p, victim.addr).Healthy })
	if f := statusOf(p, victim.addr).SlowStart; f >= 1 {
		t.Errorf("no slow start after the ejection: factor %v", f)
	}
	for range 60 {
		if _, _, err := proxyOnce(p, tr); err != nil {
			t.Fatal(err)
		}
	}
	early := victim.hits.Load() - before
	if early == 0 || early >= 20 {
		t.Errorf("recovered upstream got %d of 60 right after the ejection, want some but under its 20", early)
	}
	time.Sleep(300 * time.Millisecond)
	before = victim.hits.Load()
	for range 60 {
		if _, _, err := proxyOnce(p, tr); err != nil {
			t.Fatal(err)
		}
	}
	if n := victim.hits.Load() - before; n != 20 {
		t.Errorf("after slow start it got %d of 60, want 20", n)
	}
}

// When every upstream fails, the ejection cap keeps half of the pool in
// service: Select never runs dry and the refused ejections are counted.
func TestPassiveEjectionCap(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var ups []*Upstream
	for range 4 {
		b := newBackend(t)
		b.status.Store(500)
		ups = append(ups, New(b.addr))
	}
	p, err := NewPoolWith(PoolConfig{
		Policy: Random{}, Upstreams: ups, Registry: NewRegistry(),
		Passive: &PassiveHealth{MaxFails: 1, UnhealthyStatus: Statuses{5}, FailDuration: time.Minute, MaxEjectionPercent: 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr := newTransport(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, status, err := proxyOnce(p, tr); err != nil || status != 500 {
					t.Errorf("status %d err %v", status, err)
					return
				}
				if n := len(p.Upstreams()) - p.Status().Healthy; n > 2 {
					t.Errorf("%d of 4 ejected, cap is 2", n)
					return
				}
			}
		})
	}
	wg.Wait()
	st := p.Status()
	var suppressed uint64
	for _, us := range st.Upstreams {
		suppressed += us.Passive.SuppressedEjections
	}
	if st.Healthy != 2 || suppressed == 0 {
		t.Errorf("healthy %d (want 2), suppressed %d", st.Healthy, suppressed)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Error(err)
	}
}

// A single-upstream pool may not eject its only member below 100%.
func TestAllowedEjections(t *testing.T) {
	for _, tc := range []struct{ pct, n, want int }{
		{50, 1, 0}, {50, 2, 1}, {50, 4, 2}, {10, 5, 1}, {10, 30, 3}, {100, 1, 1}, {100, 3, 3},
	} {
		c := PassiveHealth{MaxEjectionPercent: tc.pct}
		if got := c.allowedEjections(tc.n); got != tc.want {
			t.Errorf("%d%% of %d: %d, want %d", tc.pct, tc.n, got, tc.want)
		}
	}
}
