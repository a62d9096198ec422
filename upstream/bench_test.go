package upstream

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// BenchmarkSelect measures one Select plus its Release, per policy and pool
// size, as the proxy calls them. Hash and cookie requests carry their key
// (the cookie a valid one), so each figure is the steady-state hot path.
func BenchmarkSelect(b *testing.B) {
	for _, name := range []string{
		"random", "p2c", "least_requests", "round_robin", "weighted_round_robin", "first",
		"ip_hash", "client_ip_hash", "uri_hash", "header:X-User", "query:user", "cookie",
	} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				pol, err := PolicyByName(name)
				if err != nil {
					b.Fatal(err)
				}
				ups := make([]*Upstream, n)
				for i := range ups {
					ups[i] = New(fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1))
				}
				p := NewPool(pol, ups...)
				r := httptest.NewRequest("GET", "/api/items/42?user=alice&x=1", nil)
				r.RemoteAddr = "192.0.2.10:51234"
				r.Header.Set("X-User", "alice")
				s := &Selection{Request: r, Writer: httptest.NewRecorder(), ClientIP: netip.MustParseAddr("198.51.100.7")}
				if name == "cookie" {
					u, _ := p.Select(s)
					p.Release(u, Outcome{})
					c := s.Writer.Header().Get("Set-Cookie")
					r.Header.Set("Cookie", "session=abc; "+c[:strings.IndexByte(c, ';')])
				}
				o := Outcome{Kind: Success, Status: 200, Latency: time.Millisecond}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					u, err := p.Select(s)
					if err != nil {
						b.Fatal(err)
					}
					p.Release(u, o)
				}
			})
		}
	}
}

// Hot-path allocation budget: zero for every policy.
func TestSelectAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	for _, name := range []string{
		"random", "p2c", "least_requests", "round_robin", "weighted_round_robin", "first",
		"ip_hash", "client_ip_hash", "uri_hash", "header:X-User", "query:user", "cookie",
	} {
		pol, _ := PolicyByName(name)
		ups := testUps(5)
		ups[1].MaxRequests = 10
		ups[2].Weight = 3
		p, err := NewPoolWith(PoolConfig{
			Policy: pol, Upstreams: ups, Registry: NewRegistry(), SlowStart: time.Minute,
			Passive: &PassiveHealth{FailureRatio: 0.5, UnhealthyStatus: Statuses{5}},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/a?user=bob", nil)
		r.Header.Set("X-User", "bob")
		s := &Selection{Request: r, Writer: httptest.NewRecorder()}
		if name == "cookie" {
			u, _ := p.Select(s)
			p.Release(u, Outcome{})
			c := s.Writer.Header().Get("Set-Cookie")
			r.Header.Set("Cookie", c[:strings.IndexByte(c, ';')])
		}
		ups[3].SetDown(true)
		ups[3].SetDown(false) // in slow start: exercise the ramp path
		allocs := testing.AllocsPerRun(200, func() {
			u, err := p.Select(s)
			if err != nil {
				t.Fatal(err)
			}
			p.Release(u, Outcome{Kind: Success, Status: 200, Latency: time.Millisecond})
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Select+Release", name, allocs)
		}
		p.Close()
	}
}
