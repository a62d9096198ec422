package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNS sources query DNS servers directly (not through the system resolver)
// so they learn each answer's TTL.

// DNSA finds targets from the A and AAAA records of Name, all on Port.
type DNSA struct {
	Name string
	Port int
	// Network is "ip" (A and AAAA, default), "ip4" (A only) or "ip6"
	// (AAAA only).
	Network string
	// Servers are DNS servers ("host" or "host:port") asked in order.
	// Default those of /etc/resolv.conf, whose search list then applies to
	// names without a trailing dot.
	Servers []string
}

// Lookup implements Source.
func (a *DNSA) Lookup(ctx context.Context) ([]Target, time.Duration, error) {
	if a.Port < 1 || a.Port > 65535 {
		return nil, 0, fmt.Errorf("dns a %s: port %d: must be 1 to 65535", a.Name, a.Port)
	}
	r, err := newDNSResolver(a.Servers)
	if err != nil {
		return nil, 0, err
	}
	ips, ttl, err := r.lookupIP(ctx, a.Name, a.Network)
	if err != nil {
		return nil, 0, err
	}
	ts := make([]Target, len(ips))
	for i, ip := range ips {
		ts[i] = Target{Addr: netip.AddrPortFrom(ip, uint16(a.Port)).String()}
	}
	return ts, ttl, nil
}

// String names the source in status output.
func (a *DNSA) String() string { return "dns a " + a.Name + ":" + strconv.Itoa(a.Port) }

// DNSSRV finds targets from the SRV records of Name (for example
// "_http._tcp.example.com"): each record's target resolved to addresses
// (from the answer's additional section when present), with the record's
// port, weight and priority.
type DNSSRV struct {
	Name string
	// Network limits how targets resolve: "ip" (default), "ip4", "ip6".
	Network string
	// Servers as for DNSA.
	Servers []string
}

// Lookup implements Source.
func (s *DNSSRV) Lookup(ctx context.Context) ([]Target, time.Duration, error) {
	r, err := newDNSResolver(s.Servers)
	if err != nil {
		return nil, 0, err
	}
	in, err := r.query(ctx, s.Name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	ttl := minTTL(in.Answer, ^uint32(0))
	extra := make(map[string][]netip.Addr)
	extraTTL := ^uint32(0)
	for _, rr := range in.Extra {
		// Only address records: the EDNS OPT record's "TTL" is flags.
		if ip, ok := rrAddr(rr, s.Network); ok {
			name := strings.ToLower(rr.Header().Name)
			extra[name] = append(extra[name], ip)
			extraTTL = min(extraTTL, rr.Header().Ttl)
		}
	}
	var ts []Target
	var errs []error
	for _, rr := range in.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || srv.Target == "." {
			continue // "." means the service is not offered there
		}
		ips := extra[strings.ToLower(srv.Target)]
		if len(ips) == 0 {
			var t time.Duration
			ips, t, err = r.lookupIP(ctx, srv.Target, s.Network)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ttl = min(ttl, uint32(t/time.Second))
		} else {
			ttl = min(ttl, extraTTL)
		}
		for _, ip := range ips {
			ts = append(ts, Target{
				Addr:     netip.AddrPortFrom(ip, srv.Port).String(),
				Weight:   int(srv.Weight),
				Priority: int(srv.Priority),
			})
		}
	}
	if len(ts) == 0 {
		if len(errs) > 0 {
			return nil, 0, errors.Join(errs...)
		}
		return nil, 0, fmt.Errorf("dns srv %s: no records", s.Name)
	}
	return ts, ttlDuration(ttl), nil
}

// String names the source in status output.
func (s *DNSSRV) String() string { return "dns srv " + s.Name }

// dnsResolver asks a list of servers, trying each name of a search list.
type dnsResolver struct {
	servers []string
	conf    *dns.ClientConfig // nil when servers were given: no search list
}

func newDNSResolver(servers []string) (*dnsResolver, error) {
	r := &dnsResolver{}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		r.servers = append(r.servers, s)
	}
	if len(r.servers) > 0 {
		return r, nil
	}
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("dns: no servers given and none in /etc/resolv.conf: %w", err)
	}
	for _, s := range conf.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, conf.Port))
	}
	if len(r.servers) == 0 {
		return nil, errors.New("dns: no servers given and none in /etc/resolv.conf")
	}
	r.conf = conf
	return r, nil
}

// query returns the first successful answer (NOERROR, possibly with no
// records) for name and type, over UDP with TCP on truncation.
func (r *dnsResolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	names := []string{dns.Fqdn(name)}
	if r.conf != nil {
		names = r.conf.NameList(name)
	}
	var lastErr error
	for _, n := range names {
	servers:
		for _, srv := range r.servers {
			in, err := exchange(ctx, n, qtype, srv)
			if err != nil {
				lastErr = fmt.Errorf("dns %s %s via %s: %w", dns.TypeToString[qtype], n, srv, err)
				if ctx.Err() != nil {
					return nil, lastErr
				}
				continue
			}
			switch in.Rcode {
			case dns.RcodeSuccess:
				return in, nil
			case dns.RcodeNameError:
				lastErr = fmt.Errorf("dns %s %s: no such name", dns.TypeToString[qtype], n)
				break servers // authoritative: try the next search name
			default:
				lastErr = fmt.Errorf("dns %s %s via %s: %s", dns.TypeToString[qtype], n, srv, dns.RcodeToString[in.Rcode])
			}
		}
	}
	return nil, lastErr
}

func exchange(ctx context.Context, name string, qtype uint16, server string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp"}
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, server)
	}
	return in, err
}

// lookupIP returns name's addresses for network ("ip", "ip4", "ip6") and
// the smallest TTL on the way to them (CNAMEs included).
func (r *dnsResolver) lookupIP(ctx context.Context, name, network string) ([]netip.Addr, time.Duration, error) {
	var qtypes []uint16
	switch network {
	case "", "ip":
		qtypes = []uint16{dns.TypeA, dns.TypeAAAA}
	case "ip4":
		qtypes = []uint16{dns.TypeA}
	case "ip6":
		qtypes = []uint16{dns.TypeAAAA}
	default:
		return nil, 0, fmt.Errorf("dns %s: network %q: want ip, ip4 or ip6", name, network)
	}
	var ips []netip.Addr
	ttl := ^uint32(0)
	var errs []error
	for _, qt := range qtypes {
		in, err := r.query(ctx, name, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range in.Answer {
			if ip, ok := rrAddr(rr, network); ok {
				ips = append(ips, ip)
			}
		}
		ttl = minTTL(in.Answer, ttl)
	}
	if len(ips) == 0 {
		if len(errs) > 0 {
			return nil, 0, errors.Join(errs...)
		}
		return nil, 0, fmt.Errorf("dns %s: no address records", name)
	}
	return ips, ttlDuration(ttl), nil
}

func rrAddr(rr dns.RR, network string) (netip.Addr, bool) {
	switch v := rr.(type) {
	case *dns.A:
		if network != "ip6" {
			ip, ok := netip.AddrFromSlice(v.A.To4())
			return ip, ok
		}
	case *dns.AAAA:
		if network != "ip4" {
			ip, ok := netip.AddrFromSlice(v.AAAA.To16())
			return ip, ok
		}
	}
	return netip.Addr{}, false
}

func minTTL(rrs []dns.RR, ttl uint32) uint32 {
	for _, rr := range rrs {
		ttl = min(ttl, rr.Header().Ttl)
	}
	return ttl
}

// ttlDuration converts a TTL for Source.Lookup, where 0 means "unknown":
// a real TTL of 0 ("do not cache") becomes the shortest positive duration,
// so the pool looks again after MinRefresh.
func ttlDuration(ttl uint32) time.Duration {
	switch ttl {
	case ^uint32(0):
		return 0
	case 0:
		return 1
	}
	return time.Duration(ttl) * time.Second
}
