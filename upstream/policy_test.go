package upstream

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

const picks = 10000

// Every policy spreads (or concentrates) traffic as documented over 10,000
// selections with three idle upstreams.
func TestPolicyDistribution(t *testing.T) {
	even := []int{picks / 3, picks / 3, picks / 3}
	for _, tc := range []struct {
		policy string
		want   []int
		tol    float64
	}{
		{"random", even, 0.1},
		{"p2c", even, 0.1},
		{"least_requests", even, 0.1},
		{"round_robin", even, 0.01},
		{"weighted_round_robin", even, 0.01},
		{"first", []int{picks, 0, 0}, 0},
		{"cookie", even, 0.1}, // new sessions: random fallback
	} {
		t.Run(tc.policy, func(t *testing.T) {
			pol, err := PolicyByName(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			ups := testUps(3)
			p := NewPool(pol, ups...)
			got := countPicks(t, p, &Selection{Request: httptest.NewRequest("GET", "/", nil)}, picks)
			for i, u := range ups {
				within(t, u.Addr, got[u.Addr], tc.want[i], tc.tol)
			}
		})
	}
}

// Weighted policies honour weights 5:1:1.
func TestPolicyWeights(t *testing.T) {
	for _, name := range []string{"random", "weighted_round_robin"} {
		t.Run(name, func(t *testing.T) {
			pol, _ := PolicyByName(name)
			ups := testUps(3)
			ups[0].Weight = 5
			p := NewPool(pol, ups...)
			got := countPicks(t, p, &Selection{}, picks)
			within(t, "weight 5", got[ups[0].Addr], picks*5/7, 0.05)
			within(t, "weight 1", got[ups[1].Addr], picks/7, 0.1)
			within(t, "weight 1", got[ups[2].Addr], picks/7, 0.1)
		})
	}
}

// Smooth WRR interleaves rather than sending bursts, and a down upstream's
// share spreads over the rest in proportion to their weights.
func TestWeightedRoundRobinSmooth(t *testing.T) {
	ups := testUps(3)
	ups[0].Weight = 5
	p := NewPool(&WeightedRoundRobin{}, ups...)
	name := map[*Upstream]string{ups[0]: "a", ups[1]: "b", ups[2]: "c"}
	var seq strings.Builder
	for range 14 {
		u, _ := p.Select(&Selection{})
		seq.WriteString(name[u])
		p.Release(u, Outcome{})
	}
	if got, want := seq.String(), "aabacaaaabacaa"; got != want {
		t.Errorf("sequence %s, want %s", got, want)
	}

	ups = testUps(3)
	ups[0].Weight, ups[1].Weight, ups[2].Weight = 3, 1, 2
	p = NewPool(&WeightedRoundRobin{}, ups...)
	ups[2].SetDown(true)
	got := countPicks(t, p, &Selection{}, 8000)
	within(t, "weight 3 of 4 left", got[ups[0].Addr], 6000, 0.01)
	within(t, "weight 1 of 4 left", got[ups[1].Addr], 2000, 0.01)
	if got[ups[2].Addr] != 0 {
		t.Errorf("down upstream picked %d times", got[ups[2].Addr])
	}
}

// p2c compares the two sampled upstreams correctly: with in-flight counts
// 0, 5 and 10 the busiest never wins, the idlest wins both pairs it is in.
func TestP2CPicksLessLoaded(t *testing.T) {
	ups := testUps(3)
	p := NewPool(P2C{}, ups...)
	for range 5 {
		ups[1].acquire()
	}
	for range 10 {
		ups[2].acquire()
	}
	got := map[*Upstream]int{}
	s := &Selection{}
	for range picks {
		got[P2C{}.Select(p.Upstreams(), s)]++
	}
	if got[ups[2]] != 0 {
		t.Errorf("busiest upstream picked %d times", got[ups[2]])
	}
	within(t, "idle (wins 2 of 3 pairs)", got[ups[0]], picks*2/3, 0.05)
	within(t, "middle (wins 1 of 3 pairs)", got[ups[1]], picks/3, 0.1)

	// Weights: 10 in flight at weight 4 is lighter than 5 at weight 1.
	ups[2].Weight = 4 // not adopted config change: a test-only shortcut
	got = map[*Upstream]int{}
	for range picks {
		got[P2C{}.Select(p.Upstreams(), s)]++
	}
	if got[ups[1]] != 0 {
		t.Errorf("heaviest per weight picked %d times", got[ups[1]])
	}
}

func TestLeastRequestsPicksLeast(t *testing.T) {
	ups := testUps(4)
	p := NewPool(LeastRequests{}, ups...)
	for i, n := range []int{3, 1, 1, 2} {
		for range n {
			ups[i].acquire()
		}
	}
	got := map[*Upstream]int{}
	for range picks {
		got[LeastRequests{}.Select(p.Upstreams(), &Selection{})]++
	}
	if got[ups[0]]+got[ups[3]] != 0 {
		t.Errorf("busier upstreams picked: %d, %d", got[ups[0]], got[ups[3]])
	}
	within(t, "tie 1", got[ups[1]], picks/2, 0.1)
	within(t, "tie 2", got[ups[2]], picks/2, 0.1)
}

// Every policy skips an upstream that goes down, a full one, and one the
// request already tried, and picks an upstream again once it is back.
func TestPolicyDownAndBack(t *testing.T) {
	for _, name := range []string{
		"random", "p2c", "least_requests", "round_robin", "weighted_round_robin", "first",
		"ip_hash", "client_ip_hash", "uri_hash", "header:X-User", "query:user", "cookie",
	} {
		t.Run(name, func(t *testing.T) {
			pol, err := PolicyByName(name)
			if err != nil {
				t.Fatal(err)
			}
			ups := testUps(3)
			p := NewPool(pol, ups...)
			sel := func() *Selection {
				r := httptest.NewRequest("GET", "/x?user=alice", nil)
				r.Header.Set("X-User", "alice")
				return &Selection{Request: r, Writer: httptest.NewRecorder(), ClientIP: netip.MustParseAddr("192.0.2.1")}
			}
			// Find the upstream this request prefers, then take it down.
			u, _ := p.Select(sel())
			p.Release(u, Outcome{})
			u.SetDown(true)
			for range 300 {
				v, err := p.Select(sel())
				if err != nil {
					t.Fatal(err)
				}
				p.Release(v, Outcome{})
				if v == u {
					t.Fatalf("picked %s while down", u.Addr)
				}
			}
			// Tried and full upstreams are skipped too.
			s := sel()
			var other *Upstream
			for _, v := range ups {
				if v != u {
					other = v
					break
				}
			}
			s.Tried.Add(other)
			for range 100 {
				v, err := p.Select(s)
				if err != nil {
					t.Fatal(err)
				}
				p.Release(v, Outcome{})
				if v == u || v == other {
					t.Fatalf("picked %s (down or tried)", v.Addr)
				}
			}
			// All down: nothing.
			for _, v := range ups {
				v.SetDown(true)
			}
			if v, err := p.Select(sel()); err != ErrNoUpstream {
				t.Fatalf("all down: got %v, %v; want ErrNoUpstream", v, err)
			}
			for _, v := range ups {
				v.SetDown(false)
			}
			// Back up: the preferred upstream gets traffic again.
			seen := false
			for range 300 {
				v, _ := p.Select(sel())
				p.Release(v, Outcome{})
				seen = seen || v == u
			}
			if !seen {
				t.Errorf("%s never picked after coming back", u.Addr)
			}
		})
	}
}

// Hash policies spread distinct keys evenly and send one key to one place.
func TestHashPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		req    func(i int) *Selection
	}{
		{"ip_hash", func(i int) *Selection {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1000+i%5000)
			return &Selection{Request: r}
		}},
		{"client_ip_hash", func(i int) *Selection {
			return &Selection{Request: httptest.NewRequest("GET", "/", nil), ClientIP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
		}},
		{"uri_hash", func(i int) *Selection {
			return &Selection{Request: httptest.NewRequest("GET", fmt.Sprintf("/item/%d?x=1", i), nil)}
		}},
		{"header:X-User", func(i int) *Selection {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("x-user", fmt.Sprint("user", i))
			return &Selection{Request: r}
		}},
		{"query:user", func(i int) *Selection {
			return &Selection{Request: httptest.NewRequest("GET", fmt.Sprintf("/?a=b&user=u%%20%d", i), nil)}
		}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			pol, _ := PolicyByName(tc.policy)
			ups := testUps(3)
			p := NewPool(pol, ups...)
			got := map[string]int{}
			for i := range picks {
				u, _ := p.Select(tc.req(i))
				p.Release(u, Outcome{})
				got[u.Addr]++
				if i%100 == 0 { // stable
					for range 3 {
						v, _ := p.Select(tc.req(i))
						p.Release(v, Outcome{})
						if v != u {
							t.Fatalf("key %d moved from %s to %s", i, u.Addr, v.Addr)
						}
					}
				}
			}
			for _, u := range ups {
				within(t, u.Addr, got[u.Addr], picks/3, 0.1)
			}
		})
	}
}

// The client-IP and peer-IP policies agree for one IP, v4 or v4-in-v6.
func TestHashKeys(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	a, _ := NewIPHash().key(&Selection{Request: r})
	b, _ := NewClientIPHash().key(&Selection{Request: r, ClientIP: netip.MustParseAddr("::ffff:192.0.2.7")})
	c, _ := NewClientIPHash().key(&Selection{Request: r}) // falls back to the peer
	if a != b || a != c {
		t.Errorf("keys differ: %x %x %x", a, b, c)
	}
	r.RemoteAddr = "[2001:db8::1]:443"
	if _, ok := NewIPHash().key(&Selection{Request: r}); !ok {
		t.Error("IPv6 peer not hashed")
	}
	// Query values are compared unescaped and all values count.
	k1, ok1 := hashQuery("a=1&us%65r=x+y", "user")
	k2, ok2 := hashQuery("user=x%20y", "user")
	k3, _ := hashQuery("user=x%20y&user=z", "user")
	if !ok1 || !ok2 || k1 != k2 || k3 == k2 {
		t.Errorf("query keys: %x %v %x %v %x", k1, ok1, k2, ok2, k3)
	}
	if _, ok := hashQuery("users=1&xuser=2", "user"); ok {
		t.Error("matched a different key")
	}
	// Header: all values, Host from Request.Host.
	r.Header["X-K"] = []string{"a", "b"}
	h1, _ := hashHeader(r, "X-K")
	r.Header["X-K"] = []string{"a"}
	h2, _ := hashHeader(r, "X-K")
	if h1 == h2 {
		t.Error("second header value ignored")
	}
	r.Host = "example.com"
	if k, ok := NewHeaderHash("host").key(&Selection{Request: r}); !ok || k != fnvString(fnvOffset, "example.com") {
		t.Error("host header not hashed from Request.Host")
	}
}

// A missing key goes to the fallback policy.
func TestHashFallback(t *testing.T) {
	ups := testUps(3)
	pol, _ := PolicyByName("header:X-User", WithFallback(First{}))
	p := NewPool(pol, ups...)
	got := countPicks(t, p, &Selection{Request: httptest.NewRequest("GET", "/", nil)}, 100)
	if got[ups[0].Addr] != 100 {
		t.Errorf("fallback first: %v", got)
	}
}

// Rendezvous hashing: removing one of ten upstreams moves exactly the keys
// it owned (about a tenth); adding it back restores the old mapping.
func TestHRWRemapping(t *testing.T) {
	ups := testUps(10)
	pol := NewHeaderHash("X-Key")
	p := NewPool(pol, ups...)
	sel := func(i int) *Selection {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Key", fmt.Sprint("k", i))
		return &Selection{Request: r}
	}
	before := make([]*Upstream, picks)
	for i := range before {
		before[i], _ = p.Select(sel(i))
		p.Release(before[i], Outcome{})
	}
	removed := ups[3]
	p.SetUpstreams(append(append([]*Upstream{}, ups[:3]...), ups[4:]...))
	moved := 0
	for i := range before {
		u, _ := p.Select(sel(i))
		p.Release(u, Outcome{})
		switch {
		case before[i] == removed:
			moved++
			if u == removed {
				t.Fatal("removed upstream still picked")
			}
		case u != before[i]:
			t.Fatalf("key %d moved from %s to %s though its upstream stayed", i, before[i].Addr, u.Addr)
		}
	}
	within(t, "keys moved", moved, picks/10, 0.15)

	// Adding it back (as a copy: it left the pool) restores every key.
	p.SetUpstreams(ups)
	for i := range before {
		u, _ := p.Select(sel(i))
		p.Release(u, Outcome{})
		if u.Addr != before[i].Addr {
			t.Fatalf("key %d not restored: %s, was %s", i, u.Addr, before[i].Addr)
		}
	}
}

// Weighted rendezvous: weights shift the key share, and a weight change
// on one upstream only moves keys to or from it.
func TestHRWWeighted(t *testing.T) {
	ups := testUps(3)
	ups[0].Weight = 2
	p := NewPool(NewURIHash(), ups...)
	got := map[string]int{}
	for i := range picks {
		u, _ := p.Select(&Selection{Request: httptest.NewRequest("GET", fmt.Sprint("/", i), nil)})
		p.Release(u, Outcome{})
		got[u.Addr]++
	}
	within(t, "weight 2", got[ups[0].Addr], picks/2, 0.1)
	within(t, "weight 1", got[ups[1].Addr], picks/4, 0.1)
}

func TestFirstFailover(t *testing.T) {
	ups := testUps(3)
	p := NewPool(First{}, ups...)
	ups[0].SetDown(true)
	got := countPicks(t, p, &Selection{}, 100)
	if got[ups[1].Addr] != 100 {
		t.Errorf("backup not used: %v", got)
	}
	ups[0].SetDown(false)
	got = countPicks(t, p, &Selection{}, 100)
	if got[ups[0].Addr] != 100 {
		t.Errorf("primary not back: %v", got)
	}
}

func TestPolicyByName(t *testing.T) {
	for _, name := range PolicyNames() {
		name = strings.Replace(name, "NAME", "X-Thing", 1)
		pol, err := PolicyByName(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if n := pol.(Named).Name(); n != name {
			t.Errorf("Name() = %q, want %q", n, name)
		}
	}
	for name, want := range map[string]string{
		"nope":          "valid policies: random, p2c",
		"header":        "needs a header name, e.g. header:X-User-ID",
		"header:":       "needs a name after the colon",
		"query":         "needs a query parameter name",
		"header:a b":    "not a valid header name",
		"random:x":      "takes no argument",
		"cookie:a;b":    "not a valid cookie name",
		"least_conn":    "least_requests",
		"weighted":      "weighted_round_robin",
		"round-robin":   "round_robin",
		"cookie:x:y:z!": "not a valid cookie name",
	} {
		_, err := PolicyByName(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("PolicyByName(%q) error %v, want it to mention %q", name, err, want)
		}
	}
}

// Slow start: a recovered upstream starts at a tenth of its share and
// ramps up; policies that ignore weights admit it with that probability.
func TestSlowStartRamp(t *testing.T) {
	for _, name := range []string{"random", "round_robin", "weighted_round_robin", "p2c", "least_requests", "uri_hash"} {
		t.Run(name, func(t *testing.T) {
			pol, _ := PolicyByName(name)
			ups := testUps(2)
			p := NewPool(pol, ups...)
			for _, u := range ups {
				u.slow = time.Hour // NewPool has no slow start setting; test shortcut
			}
			ups[0].SetDown(true)
			ups[0].SetDown(false) // recovered just now: factor ~0.1
			if f := ups[0].ramp(); f < minRamp || f > 0.11 {
				t.Fatalf("ramp right after recovery = %v", f)
			}
			got := map[string]int{}
			for i := range picks {
				u, _ := p.Select(&Selection{Request: httptest.NewRequest("GET", fmt.Sprint("/", i), nil)})
				p.Release(u, Outcome{})
				got[u.Addr]++
			}
			// 50% without slow start; with it about a tenth of that
			// (admission: f × 50% = 5%; weight: f/(1+f) ≈ 9%).
			if share := float64(got[ups[0].Addr]) / picks; share < 0.03 || share > 0.12 {
				t.Errorf("recovering upstream share %.3f, want 0.05 to 0.09", share)
			}
			// Once the ramp is over it is back to normal.
			ups[0].h.upSince.Store(mono() - int64(2*time.Hour))
			if f := ups[0].ramp(); f != 1 {
				t.Errorf("ramp after slow start = %v", f)
			}
		})
	}
}

// Policies are safe for concurrent use while health flips underneath.
func TestPoliciesConcurrent(t *testing.T) {
	for _, name := range PolicyNames() {
		name = strings.Replace(name, "NAME", "X-K", 1)
		pol, _ := PolicyByName(name)
		ups := testUps(5)
		ups[0].Weight = 3
		ups[1].MaxRequests = 1
		p := NewPool(pol, ups...)
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-done:
					return
				default:
				}
				ups[i%5].SetDown(i%2 == 0)
				time.Sleep(10 * time.Microsecond)
			}
		})
		var users sync.WaitGroup
		for g := range 4 {
			users.Go(func() {
				for i := range 500 {
					r := httptest.NewRequest("GET", fmt.Sprint("/?k=", i), nil)
					r.Header.Set("X-K", fmt.Sprint(g, i))
					u, err := p.Select(&Selection{Request: r, Writer: httptest.NewRecorder()})
					if err == nil {
						p.Release(u, Outcome{Kind: Success, Status: 200, Latency: time.Millisecond})
					}
				}
			})
		}
		users.Wait()
		close(done)
		wg.Wait()
		for _, u := range ups {
			if n := u.Inflight(); n != 0 {
				t.Errorf("%s: %s left with %d in flight", name, u.Addr, n)
			}
		}
	}
}
