package upstream

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// An upstream at MaxRequests is skipped, not failed; when all are full
// Select fails at once without a queue timeout.
func TestMaxRequestsSkip(t *testing.T) {
	ups := testUps(2)
	ups[0].MaxRequests = 2
	ups[1].MaxRequests = 1
	p := NewPool(First{}, ups...)
	var held []*Upstream
	for range 3 {
		u, err := p.Select(&Selection{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, u)
	}
	if held[0] != ups[0] || held[1] != ups[0] || held[2] != ups[1] {
		t.Errorf("picks %v %v %v", held[0].Addr, held[1].Addr, held[2].Addr)
	}
	if _, err := p.Select(&Selection{}); !errors.Is(err, ErrNoUpstream) || err == ErrNoUpstream {
		t.Errorf("all full: %v, want errAllFull", err)
	}
	p.Release(held[0], Outcome{})
	if u, err := p.Select(&Selection{}); err != nil || u != ups[0] {
		t.Errorf("after release: %v %v", u, err)
	}
	if st := statusOf(p, ups[0].Addr); st.Failures != 0 {
		t.Error("a full upstream counted a failure")
	}
}

// Concurrency never exceeds MaxRequests, whatever the race.
func TestMaxRequestsUnderRace(t *testing.T) {
	ups := testUps(3)
	for _, u := range ups {
		u.MaxRequests = 2
	}
	p, err := NewPoolWith(PoolConfig{Policy: P2C{}, Upstreams: ups, Registry: NewRegistry(), QueueTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := map[*Upstream]int64{}
	for range 16 {
		wg.Go(func() {
			for range 200 {
				u, err := p.Select(&Selection{})
				if err != nil {
					t.Error(err)
					return
				}
				if n := u.Inflight(); n > 2 {
					mu.Lock()
					peak[u] = max(peak[u], n)
					mu.Unlock()
				}
				p.Release(u, Outcome{})
			}
		})
	}
	wg.Wait()
	if len(peak) > 0 {
		for u, n := range peak {
			t.Errorf("%s reached %d in flight, limit 2", u.Addr, n)
		}
	}
}

// With a queue timeout, Select waits for a slot: it gets one when a
// request finishes, gives up after the timeout, and stops when the client
// goes away.
func TestQueueWait(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	u := New("10.0.0.1:80")
	u.MaxRequests = 1
	p, err := NewPoolWith(PoolConfig{Upstreams: []*Upstream{u}, Registry: NewRegistry(), QueueTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	held, _ := p.Select(&Selection{})

	// Released while waiting: the waiter gets it.
	go func() {
		time.Sleep(30 * time.Millisecond)
		p.Release(held, Outcome{})
	}()
	start := time.Now()
	got, err := p.Select(&Selection{Request: httptest.NewRequest("GET", "/", nil)})
	if err != nil || got != u {
		t.Fatalf("waiter: %v %v", got, err)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 150*time.Millisecond {
		t.Errorf("waited %v, want about 30ms", d)
	}

	// Nobody releases: ErrNoUpstream after the timeout.
	start = time.Now()
	if _, err := p.Select(&Selection{}); !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(start); d < 190*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("gave up after %v, want 200ms", d)
	}

	// The client goes away: ErrNoUpstream wrapping context.Canceled, early.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start = time.Now()
	_, err = p.Select(&Selection{Request: httptest.NewRequest("GET", "/", nil).WithContext(ctx)})
	if !errors.Is(err, ErrNoUpstream) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("cancel noticed after %v", d)
	}

	// Down, not full: no waiting.
	u.SetDown(true)
	start = time.Now()
	if _, err := p.Select(&Selection{}); err != ErrNoUpstream || time.Since(start) > 50*time.Millisecond {
		t.Errorf("down: %v after %v", err, time.Since(start))
	}
	u.SetDown(false)
	p.Release(got, Outcome{})
	if n := p.waiters.Load(); n != 0 {
		t.Errorf("%d waiters left registered", n)
	}
}

// Many waiters, few slots: everyone is served in turn, nobody exceeds the
// limit and nothing is lost.
func TestQueueManyWaiters(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	u := New("10.0.0.1:80")
	u.MaxRequests = 2
	p, _ := NewPoolWith(PoolConfig{Upstreams: []*Upstream{u}, Registry: NewRegistry(), QueueTimeout: 5 * time.Second})
	defer p.Close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 10 {
				got, err := p.Select(&Selection{})
				if err != nil {
					t.Error(err)
					return
				}
				if n := got.Inflight(); n > 2 {
					t.Errorf("%d in flight", n)
				}
				time.Sleep(100 * time.Microsecond)
				p.Release(got, Outcome{})
			}
		})
	}
	wg.Wait()
	if st := statusOf(p, u.Addr); st.Requests != 200 || st.Inflight != 0 {
		t.Errorf("requests %d inflight %d", st.Requests, st.Inflight)
	}
}

// Release accounting: failures counted, ignored outcomes never.
func TestReleaseAccounting(t *testing.T) {
	u := New("10.0.0.1:80")
	p := NewPool(nil, u)
	for _, o := range []Outcome{
		{Kind: Success, Status: 200, Latency: 10 * time.Millisecond},
		{Kind: Failure, Status: 502, Latency: 30 * time.Millisecond},
		{Kind: Failure, Latency: time.Millisecond}, // no answer: no latency sample
		{Kind: Ignored, Latency: time.Hour},
	} {
		got, _ := p.Select(&Selection{})
		p.Release(got, o)
	}
	st := statusOf(p, u.Addr)
	if st.Requests != 4 || st.Failures != 2 || st.Inflight != 0 || st.LatencySamples != 2 {
		t.Errorf("status %+v", st)
	}
	if st.LatencyP99 != 30 || st.LatencyEWMA < 10 || st.LatencyEWMA > 30 {
		t.Errorf("latency ewma %v p99 %v", st.LatencyEWMA, st.LatencyP99)
	}
}

// SetUpstreams keeps members, releases removed ones and copies upstreams
// owned by another pool (sharing their counters).
func TestSetUpstreamsMembership(t *testing.T) {
	reg := NewRegistry()
	ups := testUps(3)
	p1, _ := NewPoolWith(PoolConfig{Upstreams: ups, Registry: reg})
	if reg.Len() != 3 {
		t.Fatalf("registry holds %d", reg.Len())
	}
	u, _ := p1.Select(&Selection{})
	p1.Release(u, Outcome{})
	p1.SetUpstreams(ups[:2])
	if reg.Len() != 2 {
		t.Errorf("after removal registry holds %d", reg.Len())
	}
	if p1.Upstreams()[0] != ups[0] {
		t.Error("member replaced by a copy")
	}

	p2, _ := NewPoolWith(PoolConfig{Upstreams: ups[:1], Registry: reg})
	c := p2.Upstreams()[0]
	if c == ups[0] || c.h != ups[0].h {
		t.Error("upstream of another pool: want a copy sharing state")
	}
	p1.Close()
	if reg.Len() != 1 {
		t.Errorf("after close registry holds %d", reg.Len())
	}
	p2.Close()
	p2.Close()
	if reg.Len() != 0 {
		t.Errorf("after both closed registry holds %d", reg.Len())
	}

	// Plain pools share private state through copies too.
	a := New("10.9.9.9:80")
	q1 := NewPool(nil, a)
	q2 := NewPool(nil, a)
	got, _ := q2.Select(&Selection{})
	if got == a || a.Inflight() != 1 {
		t.Errorf("copy in second plain pool: same=%v inflight=%d", got == a, a.Inflight())
	}
	q2.Release(got, Outcome{})
	_ = q1
}

func TestPoolConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  PoolConfig
		want string
	}{
		{PoolConfig{SlowStart: -1}, "slow_start"},
		{PoolConfig{QueueTimeout: -1}, "queue_timeout"},
		{PoolConfig{Upstreams: []*Upstream{{}}}, "without an address"},
		{PoolConfig{Upstreams: []*Upstream{{Addr: "a:1", Scheme: "ftp"}}}, "want http or https"},
		{PoolConfig{Upstreams: testUps(1), Discovery: &Discovery{Source: Static{}}}, "either upstreams or discovery"},
		{PoolConfig{Discovery: &Discovery{}}, "no source"},
		{PoolConfig{Active: &ActiveHealth{Path: "health"}}, "must start with /"},
		{PoolConfig{Active: &ActiveHealth{ExpectBody: "("}}, "expect_body"},
		{PoolConfig{Active: &ActiveHealth{ExpectStatus: Statuses{7}}}, "class 1-5"},
		{PoolConfig{Passive: &PassiveHealth{FailureRatio: 2}}, "failure_ratio"},
		{PoolConfig{Passive: &PassiveHealth{MaxFails: -1}}, "nothing would ever eject"},
		{PoolConfig{Passive: &PassiveHealth{FailDuration: time.Minute, MaxEjectionTime: time.Second}}, "max_ejection_time"},
		{PoolConfig{Passive: &PassiveHealth{MaxEjectionPercent: 101}}, "max_ejection_percent"},
	} {
		_, err := NewPoolWith(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// A pool's first members start at full share; members added later ramp up
// like recovered ones, unless their address was already known.
func TestSlowStartForNewMembers(t *testing.T) {
	reg := NewRegistry()
	ups := testUps(2)
	p, _ := NewPoolWith(PoolConfig{Upstreams: ups, Registry: reg, SlowStart: time.Hour})
	defer p.Close()
	for _, u := range ups {
		if f := u.ramp(); f != 1 {
			t.Errorf("initial member ramp %v", f)
		}
	}
	fresh := New("10.0.0.9:80")
	p.SetUpstreams(append(ups[:2:2], fresh))
	if f := fresh.ramp(); f >= 1 {
		t.Errorf("new member ramp %v, want < 1", f)
	}
	// Known to the registry through another pool: no ramp.
	other, _ := NewPoolWith(PoolConfig{Upstreams: []*Upstream{New("10.0.0.7:80")}, Registry: reg})
	defer other.Close()
	known := New("10.0.0.7:80")
	p.SetUpstreams([]*Upstream{ups[0], known})
	if f := known.ramp(); f != 1 {
		t.Errorf("known address ramp %v", f)
	}
}
