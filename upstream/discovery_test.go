package upstream

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

// dnsServer is a real DNS server on loopback UDP whose answers a test
// changes while it runs.
type dnsServer struct {
	addr    string
	server  *dns.Server
	queries atomic.Int64
	fail    atomic.Bool // answer SERVFAIL

	mu  sync.Mutex
	ttl uint32
	a   map[string][]string // name -> IPv4/IPv6 addresses
	srv map[string][]*dns.SRV
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{addr: pc.LocalAddr().String(), ttl: 60, a: map[string][]string{}, srv: map[string][]*dns.SRV{}}
	started := make(chan struct{})
	d.server = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.server.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		d.server.Shutdown()
		<-done
	})
	return d
}

func (d *dnsServer) setA(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[dns.Fqdn(name)] = ips
}

func (d *dnsServer) setSRV(name string, recs ...*dns.SRV) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv[dns.Fqdn(name)] = recs
}

func (d *dnsServer) setTTL(ttl uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ttl = ttl
}

func (d *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	d.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	if d.fail.Load() {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	addrRRs := func(name string, qtype uint16) []dns.RR {
		var out []dns.RR
		for _, ip := range d.a[name] {
			is4 := net.ParseIP(ip).To4() != nil
			hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: d.ttl}
			switch {
			case is4 && qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				out = append(out, &dns.A{Hdr: hdr, A: net.ParseIP(ip)})
			case !is4 && qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				out = append(out, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP(ip)})
			}
		}
		return out
	}
	_, knownA := d.a[name]
	_, knownSRV := d.srv[name]
	switch {
	case q.Qtype == dns.TypeSRV && knownSRV:
		for _, r := range d.srv[name] {
			rr := *r
			rr.Hdr = dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: d.ttl}
			m.Answer = append(m.Answer, &rr)
			// Glue for targets we know, as real servers often send.
			if strings.HasPrefix(rr.Target, "glue") {
				m.Extra = append(m.Extra, addrRRs(rr.Target, dns.TypeA)...)
			}
		}
	case (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) && knownA:
		m.Answer = addrRRs(name, q.Qtype)
	case !knownA && !knownSRV:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// Two backends on the same port at 127.0.0.1 and 127.0.0.2.
func sameportBackends(t *testing.T) (*backend, *backend, int) {
	t.Helper()
	for range 20 {
		a := newBackend(t)
		_, port, _ := net.SplitHostPort(a.addr)
		b, err := newBackendOn(t, "127.0.0.2:"+port)
		if err != nil {
			a.kill()
			continue
		}
		var p int
		fmt.Sscan(port, &p)
		return a, b, p
	}
	t.Skip("cannot listen on 127.0.0.2 with a free port")
	return nil, nil, 0
}

// DNS A answers that change mid-test move traffic from one address to
// another with no failed request, and an address that stays listed keeps
// its Upstream and counters across refreshes.
func TestDiscoveryDNSAMovesTraffic(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	b1, b2, port := sameportBackends(t)
	ns := newDNSServer(t)
	ns.setA("svc.test", "127.0.0.1")
	ns.setTTL(0) // do not cache: looked up again after MinRefresh
	reg := NewRegistry()
	p, err := NewPoolWith(PoolConfig{
		Policy: &RoundRobin{}, Registry: reg,
		Discovery: &Discovery{
			Source:  &DNSA{Name: "svc.test", Port: port, Network: "ip4", Servers: []string{ns.addr}},
			Refresh: time.Hour, MinRefresh: 30 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if ups := p.Upstreams(); len(ups) != 1 || ups[0].Addr != b1.addr {
		t.Fatalf("after the first lookup: %v", ups)
	}
	first := p.Upstreams()[0]
	tr := newTransport(t)

	var stop atomic.Bool
	var errs atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for i := 0; i < 100000 && !stop.Load(); i++ {
				if _, _, err := proxyOnce(p, tr); err != nil {
					errs.Add(1)
					t.Errorf("request failed during DNS changes: %v", err)
					return
				}
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	eventually(t, time.Second, "traffic on b1", func() bool { return b1.hits.Load() > 10 })
	ns.setA("svc.test", "127.0.0.1", "127.0.0.2")
	eventually(t, time.Second, "b2 added", func() bool { return b2.hits.Load() > 10 })
	if p.Upstreams()[0] != first {
		t.Error("the address still listed got a new Upstream")
	}
	if statusOf(p, b1.addr).Requests < 10 {
		t.Error("counters lost on refresh")
	}
	ns.setA("svc.test", "127.0.0.2")
	eventually(t, time.Second, "b1 removed", func() bool { return len(p.Upstreams()) == 1 && p.Upstreams()[0].Addr == b2.addr })
	// Only requests already in flight (at most one per worker) reach b1.
	h1, h2 := b1.hits.Load(), b2.hits.Load()
	eventually(t, 2*time.Second, "traffic on b2", func() bool { return b2.hits.Load() > h2+30 })
	if n := b1.hits.Load() - h1; n > 3 {
		t.Errorf("b1 got %d requests after its removal", n)
	}
	stop.Store(true)
	wg.Wait()
	if errs.Load() != 0 {
		t.Errorf("%d failed requests", errs.Load())
	}
	if n := reg.Len(); n != 1 {
		t.Errorf("registry holds %d addresses, want 1", n)
	}
}

// The refresh honours the TTL: a 1s TTL is looked up about once a second
// though the refresh interval is an hour, and a change shows within it.
func TestDiscoveryHonoursTTL(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ns := newDNSServer(t)
	ns.setA("svc.test", "127.0.0.1")
	ns.setTTL(1)
	p, err := NewPoolWith(PoolConfig{Registry: NewRegistry(), Discovery: &Discovery{
		Source:  &DNSA{Name: "svc.test", Port: 80, Servers: []string{ns.addr}},
		Refresh: time.Hour, MinRefresh: 10 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	q0 := ns.queries.Load() // A and AAAA
	ns.setA("svc.test", "127.0.0.3")
	took := eventually(t, 2*time.Second, "TTL refresh", func() bool {
		ups := p.Upstreams()
		return len(ups) == 1 && ups[0].Addr == "127.0.0.3:80"
	})
	if took < 700*time.Millisecond {
		t.Errorf("refreshed after %v, before the 1s TTL expired", took)
	}
	if n := ns.queries.Load() - q0; n > 4 {
		t.Errorf("%d queries within one TTL", n)
	}
	if st := p.Status().Discovery; st == nil || st.LastSuccess == nil || st.Source != "dns a svc.test:80" || st.Stale {
		t.Errorf("discovery status %+v", st)
	}
}

// When lookups fail the last good answer is kept for the grace period,
// then dropped; the next good answer restores the pool.
func TestDiscoveryGracePeriod(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ns := newDNSServer(t)
	ns.setA("svc.test", "127.0.0.1")
	ns.setTTL(0)
	p, err := NewPoolWith(PoolConfig{Registry: NewRegistry(), Discovery: &Discovery{
		Source:  &DNSA{Name: "svc.test", Port: 80, Servers: []string{ns.addr}},
		Refresh: 50 * time.Millisecond, MinRefresh: 20 * time.Millisecond, GracePeriod: 300 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ns.fail.Store(true)
	start := time.Now()
	eventually(t, time.Second, "lookup failures seen", func() bool { return p.Status().Discovery.Failures >= 2 })
	if len(p.Upstreams()) != 1 {
		t.Fatal("last good answer dropped at the first failure")
	}
	if st := p.Status().Discovery; !st.Stale || !strings.Contains(st.LastError, "SERVFAIL") {
		t.Errorf("status while failing: %+v", st)
	}
	eventually(t, 2*time.Second, "dropped after grace", func() bool { return len(p.Upstreams()) == 0 })
	// The last good answer was valid until at most MinRefresh before start.
	if time.Since(start) < 280*time.Millisecond {
		t.Errorf("dropped %v after failures began, before the grace period", time.Since(start))
	}
	if _, err := p.Select(&Selection{}); err != ErrNoUpstream {
		t.Errorf("empty pool: %v", err)
	}
	ns.fail.Store(false)
	eventually(t, 2*time.Second, "restored", func() bool { return len(p.Upstreams()) == 1 })

	// An empty answer is treated like a failure, not as "no upstreams".
	ns.setA("svc.test")
	time.Sleep(150 * time.Millisecond)
	if len(p.Upstreams()) != 1 {
		t.Error("empty answer emptied the pool before the grace period")
	}
}

// SRV: ports, weights and priorities come from the records; targets
// resolve from glue or by their own lookup; priorities order the members
// so first fails over in priority order.
func TestDiscoverySRV(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	a, b := newBackend(t), newBackend(t)
	_, pa, _ := net.SplitHostPort(a.addr)
	_, pb, _ := net.SplitHostPort(b.addr)
	var portA, portB uint16
	fmt.Sscan(pa, &portA)
	fmt.Sscan(pb, &portB)
	ns := newDNSServer(t)
	ns.setTTL(0)
	ns.setA("glue-a.test", "127.0.0.1")
	ns.setA("noglue-b.test", "127.0.0.1")
	ns.setSRV("_http._tcp.svc.test",
		&dns.SRV{Priority: 20, Weight: 3, Port: portB, Target: "noglue-b.test."},
		&dns.SRV{Priority: 10, Weight: 5, Port: portA, Target: "glue-a.test."},
		&dns.SRV{Priority: 5, Weight: 1, Port: 1, Target: "."},
	)
	p, err := NewPoolWith(PoolConfig{Policy: First{}, Registry: NewRegistry(), Discovery: &Discovery{
		Source:  &DNSSRV{Name: "_http._tcp.svc.test", Servers: []string{ns.addr}},
		Refresh: time.Hour, MinRefresh: 30 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ups := p.Upstreams()
	if len(ups) != 2 || ups[0].Addr != a.addr || ups[0].Weight != 5 || ups[1].Addr != b.addr || ups[1].Weight != 3 {
		t.Fatalf("members %v", p.Status().Upstreams)
	}
	tr := newTransport(t)
	if u, _, err := proxyOnce(p, tr); err != nil || u.Addr != a.addr {
		t.Fatalf("first priority: %v %v", u, err)
	}
	// Priorities swap mid-test: traffic follows without a failed request.
	ns.setSRV("_http._tcp.svc.test",
		&dns.SRV{Priority: 1, Weight: 3, Port: portB, Target: "noglue-b.test."},
		&dns.SRV{Priority: 10, Weight: 5, Port: portA, Target: "glue-a.test."},
	)
	eventually(t, time.Second, "priority change", func() bool { return p.Upstreams()[0].Addr == b.addr })
	for range 10 {
		if u, _, err := proxyOnce(p, tr); err != nil || u.Addr != b.addr {
			t.Fatalf("after swap: %v %v", u, err)
		}
	}
}

func TestDNSErrors(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ns := newDNSServer(t)
	ctx := context.Background()
	if _, _, err := (&DNSA{Name: "missing.test", Port: 80, Servers: []string{ns.addr}}).Lookup(ctx); err == nil || !strings.Contains(err.Error(), "no such name") {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if _, _, err := (&DNSA{Name: "x.test", Port: 0, Servers: []string{ns.addr}}).Lookup(ctx); err == nil {
		t.Error("port 0 accepted")
	}
	if _, _, err := (&DNSA{Name: "x.test", Port: 80, Network: "tcp", Servers: []string{ns.addr}}).Lookup(ctx); err == nil || !strings.Contains(err.Error(), "want ip, ip4 or ip6") {
		t.Errorf("bad network: %v", err)
	}
	ns.setA("v6.test", "::1", "127.0.0.1")
	ts, ttl, err := (&DNSA{Name: "v6.test", Port: 8080, Servers: []string{ns.addr}}).Lookup(ctx)
	if err != nil || len(ts) != 2 || ts[1].Addr != "[::1]:8080" || ttl != 60*time.Second {
		t.Errorf("A+AAAA: %v %v %v", ts, ttl, err)
	}
	// SRV with glue: the TTL is the records', not the EDNS OPT record's.
	ns.setA("glue-x.test", "127.0.0.1")
	ns.setSRV("_x._tcp.test", &dns.SRV{Port: 81, Target: "glue-x.test."})
	ts, ttl, err = (&DNSSRV{Name: "_x._tcp.test", Servers: []string{ns.addr}}).Lookup(ctx)
	if err != nil || len(ts) != 1 || ts[0].Addr != "127.0.0.1:81" || ttl != 60*time.Second {
		t.Errorf("SRV with glue: %v %v %v", ts, ttl, err)
	}
	// A dead server is an error within the timeout, not a hang.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	addr := dead.LocalAddr().String()
	dead.Close()
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := (&DNSA{Name: "x.test", Port: 80, Servers: []string{addr}}).Lookup(cctx); err == nil {
		t.Error("dead server: no error")
	}
}

// Static sources work through the same machinery.
func TestDiscoveryStatic(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p, err := NewPoolWith(PoolConfig{Registry: NewRegistry(), Discovery: &Discovery{
		Source: Static{{Addr: "10.0.0.2:80", Priority: 2}, {Addr: "10.0.0.1:80", Weight: 3, Priority: 1}, {Addr: "10.0.0.1:80", Priority: 5}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ups := p.Upstreams()
	if len(ups) != 2 || ups[0].Addr != "10.0.0.1:80" || ups[0].Weight != 3 {
		t.Errorf("members %+v", p.Status().Upstreams)
	}
}
