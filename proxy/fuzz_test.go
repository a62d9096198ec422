package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/upstream"
)

// Fuzz targets for the request preparation helpers. Seed corpora live in
// testdata/fuzz/<FuzzName>/; run one target with
//
//	go test -run '^$' -fuzz '^FuzzHopByHop$' -fuzztime 30s ./proxy/
//
// Without -fuzz, go test runs every seed as a regression test.

// fuzzHandler builds a Handler without upstreams: enough for prepare,
// setForwarded and upgradeAllowed.
func fuzzHandler(t *testing.T, cfg Config) *Handler {
	t.Helper()
	cfg.Upstreams = upstream.NewPool(nil)
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fuzzParseHeader parses a header block the way net/http's server does
// (textproto), or reports false when the server would reject it.
func fuzzParseHeader(block string) (http.Header, bool) {
	r := textproto.NewReader(bufio.NewReader(strings.NewReader(block + "\r\n\r\n")))
	h, err := r.ReadMIMEHeader()
	if err != nil {
		return nil, false
	}
	return http.Header(h), true
}

// fuzzOWS trims optional whitespace (RFC 9110 §5.6.3: SP and HTAB).
func fuzzOWS(s string) string { return strings.Trim(s, " \t") }

// fuzzASCIIEqualFold compares header names as HTTP does: ASCII
// case-insensitively (a Unicode fold such as the Kelvin sign is not a match).
func fuzzASCIIEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// fuzzConnectionTokens lists every connection option named in any
// Connection line, computed independently of removeHopByHop.
func fuzzConnectionTokens(h http.Header) []string {
	var toks []string
	for _, line := range h["Connection"] {
		for _, tok := range strings.Split(line, ",") {
			if tok = fuzzOWS(tok); tok != "" {
				toks = append(toks, tok)
			}
		}
	}
	return toks
}

var fuzzHopNames = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Http2-Settings", // connection-specific (RFC 7540 §3.2.1)
}

func fuzzIsHop(k string) bool {
	for _, h := range fuzzHopNames {
		if fuzzASCIIEqualFold(h, k) {
			return true
		}
	}
	return false
}

func fuzzNamed(k string, toks []string) bool {
	for _, t := range toks {
		if fuzzASCIIEqualFold(k, t) {
			return true
		}
	}
	return false
}

// FuzzHopByHop: after removeHopByHop no hop-by-hop header and no header
// named in any Connection line (also an empty first one) remains, and every
// other header survives untouched. Then the same block goes through the
// whole prepare step: a client cannot use Connection to strip the
// X-Forwarded-* headers the proxy sets (CVE-2021-33197, Go #50580).
func FuzzHopByHop(f *testing.F) {
	f.Add("Connection: close, X-Foo\r\nX-Foo: 1\r\nX-Bar: 2")
	f.Fuzz(func(t *testing.T, block string) {
		in, ok := fuzzParseHeader(block)
		if !ok {
			return
		}
		toks := fuzzConnectionTokens(in)
		orig := in.Clone()
		out := in.Clone()
		removeHopByHop(out)

		if !reflect.DeepEqual(in, orig) {
			t.Fatalf("removeHopByHop touched its input's twin: %q", in)
		}
		for k := range out {
			if fuzzIsHop(k) {
				t.Errorf("hop-by-hop header %q survived", k)
			}
			if fuzzNamed(k, toks) {
				t.Errorf("header %q named in Connection %q survived", k, in["Connection"])
			}
		}
		for k, vv := range orig {
			if fuzzIsHop(k) || fuzzNamed(k, toks) {
				continue
			}
			if got, ok := out[k]; !ok || !reflect.DeepEqual(got, vv) {
				t.Errorf("header %q not named in Connection %q: got %q, want %q", k, in["Connection"], got, vv)
			}
		}

		// The whole prepare step, from a peer that is not trusted.
		h := fuzzHandler(t, Config{})
		req := httptest.NewRequest("GET", "http://example.com/", nil)
		req.Header = in.Clone()
		req.RemoteAddr = "192.0.2.7:4711"
		rt := newRoundTrip(h, httptest.NewRecorder(), req)
		rt.out = cloneForTest(req)
		rt.prepare()
		set := map[string]bool{
			"X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Host": true,
			"User-Agent": true, "Te": true, "Connection": true, "Upgrade": true,
		}
		for k := range rt.out.Header {
			if set[k] {
				continue
			}
			if fuzzIsHop(k) || fuzzNamed(k, toks) {
				t.Errorf("prepare forwarded %q (hop-by-hop or named in Connection %q)", k, in["Connection"])
			}
		}
		if got := rt.out.Header["X-Forwarded-For"]; !reflect.DeepEqual(got, []string{"192.0.2.7"}) {
			t.Errorf("X-Forwarded-For %q, want [192.0.2.7] (Connection %q)", got, in["Connection"])
		}
		if got := rt.out.Header["X-Forwarded-Proto"]; !reflect.DeepEqual(got, []string{"http"}) {
			t.Errorf("X-Forwarded-Proto %q, want [http]", got)
		}
		if te, ok := rt.out.Header["Te"]; ok && !reflect.DeepEqual(te, []string{"trailers"}) {
			t.Errorf("Te forwarded as %q, only \"trailers\" may pass", te)
		}
		if rt.upgrade == "" {
			if _, ok := rt.out.Header["Upgrade"]; ok {
				t.Errorf("Upgrade %q forwarded without an allowed upgrade", rt.out.Header["Upgrade"])
			}
			if _, ok := rt.out.Header["Connection"]; ok {
				t.Errorf("Connection %q forwarded without an upgrade", rt.out.Header["Connection"])
			}
		}
		if !reflect.DeepEqual(req.Header, orig) {
			t.Errorf("prepare mutated the inbound header: %q, was %q", req.Header, orig)
		}
	})
}

// fuzzTchar is RFC 9110 §5.6.2 tchar, written out independently of
// validToken's table.
const fuzzTchar = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func fuzzIsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(fuzzTchar, s[i]) < 0 {
			return false
		}
	}
	return true
}

// FuzzUpgradeToken: validToken accepts exactly RFC 9110 tokens (never a CTL,
// space, separator or non-ASCII byte), and whatever the client sends and
// whatever the configured allow-list says, h2c is never allowed upstream and
// prepare forwards Upgrade only as one allowed token.
func FuzzUpgradeToken(f *testing.F) {
	f.Add("Upgrade", "websocket", "")
	f.Fuzz(func(t *testing.T, connection, upgrade, allow string) {
		for _, s := range []string{connection, upgrade, allow} {
			if got, want := validToken(s), fuzzIsToken(s); got != want {
				t.Fatalf("validToken(%q) = %v, want %v", s, got, want)
			}
		}
		var allowed []string
		if allow != "" {
			allowed = strings.Split(allow, ",")
		}
		cfg := Config{Upgrades: allowed, Upstreams: upstream.NewPool(nil)}
		h, err := New(cfg)
		if err != nil {
			bad := false
			for _, a := range allowed {
				bad = bad || !fuzzIsToken(a)
			}
			if !bad {
				t.Fatalf("New rejected upgrades %q: %v", allowed, err)
			}
			return
		}
		for _, a := range allowed {
			if !fuzzIsToken(a) {
				t.Fatalf("New accepted invalid upgrade token %q", a)
			}
		}
		listed := func(tok string) bool {
			if allowed == nil {
				return strings.EqualFold(tok, "websocket")
			}
			for _, a := range allowed {
				if strings.EqualFold(a, tok) {
					return true
				}
			}
			return false
		}
		check := func(tok string) {
			if !h.upgradeAllowed(tok) {
				return
			}
			if strings.EqualFold(tok, "h2c") {
				t.Fatalf("upgradeAllowed(%q) with allow-list %q: h2c must never pass", tok, allowed)
			}
			if !fuzzIsToken(tok) || !listed(tok) {
				t.Fatalf("upgradeAllowed(%q) with allow-list %q", tok, allowed)
			}
		}
		check(upgrade)
		check("h2c")
		check("H2C")

		in := http.Header{}
		for _, l := range strings.Split(connection, "\n") {
			in.Add("Connection", l)
		}
		for _, l := range strings.Split(upgrade, "\n") {
			in.Add("Upgrade", l)
		}
		tok := upgradeToken(in)
		if tok != "" && !headerHasToken(in, "Connection", "upgrade") {
			t.Fatalf("upgradeToken = %q without Connection: upgrade (%q)", tok, in["Connection"])
		}
		check(tok)

		req := httptest.NewRequest("GET", "http://example.com/", nil)
		req.Header = in
		req.RemoteAddr = "192.0.2.7:4711"
		rt := newRoundTrip(h, httptest.NewRecorder(), req)
		rt.out = cloneForTest(req)
		rt.prepare()
		up, hasUp := rt.out.Header["Upgrade"]
		if !hasUp {
			if rt.upgrade != "" {
				t.Fatalf("rt.upgrade %q but no Upgrade header forwarded", rt.upgrade)
			}
			return
		}
		if len(up) != 1 || up[0] != rt.upgrade || !h.upgradeAllowed(up[0]) || strings.EqualFold(up[0], "h2c") {
			t.Fatalf("forwarded Upgrade %q (rt.upgrade %q) for client Upgrade %q, allow-list %q", up, rt.upgrade, in["Upgrade"], allowed)
		}
		if c := rt.out.Header["Connection"]; len(c) != 1 || !strings.EqualFold(c[0], "upgrade") {
			t.Fatalf("forwarded Connection %q with Upgrade %q", c, up)
		}
	})
}

// fuzzTrustSets are the trusted-proxy configurations FuzzForwarded picks from.
var fuzzTrustSets = [][]netip.Prefix{
	nil,
	{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.0.2.0/24")},
	{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
}

// fuzzPeer is what the proxy must take as the peer: the RemoteAddr's IP,
// IPv4-mapped addresses unmapped, zone dropped; zero when not an IP:port.
func fuzzPeer(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// fuzzClientFromChain is the expected client IP behind a trusted peer,
// computed independently: walk the X-Forwarded-For entries right to left,
// skip trusted proxies, stop at the first untrusted address; on garbage,
// believe nothing further left (the last trusted hop is the client).
func fuzzClientFromChain(lines []string, peer netip.Addr, trusted func(netip.Addr) bool) netip.Addr {
	var entries []string
	for _, l := range lines {
		if l == "" {
			continue // an empty field line says nothing
		}
		entries = append(entries, strings.Split(l, ",")...)
	}
	cur := peer
	for i := len(entries) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(strings.TrimSpace(entries[i]))
		if err != nil {
			return cur
		}
		ip = ip.Unmap().WithZone("") // as for the peer: a zone is local to the hop that wrote it
		if !trusted(ip) {
			return ip
		}
		cur = ip
	}
	return cur
}

// FuzzForwarded: for any RemoteAddr and X-Forwarded-For chain setForwarded
// does not panic; from an untrusted peer X-Forwarded-For is exactly the peer
// IP (or absent when the peer is not an IP) and the client IP is the peer;
// from a trusted one the chain is kept, the peer appended, and the client
// IP is the right-most untrusted entry. The client IP is valid or zero, and
// never an IPv4-mapped IPv6 address.
func FuzzForwarded(f *testing.F) {
	f.Add("192.0.2.1:1234", "198.51.100.1", "example.com", uint8(0), false)
	f.Fuzz(func(t *testing.T, remote, xff, host string, trustSet uint8, isTLS bool) {
		trust := fuzzTrustSets[int(trustSet)%len(fuzzTrustSets)]
		h := fuzzHandler(t, Config{TrustedProxies: trust})
		trusted := func(ip netip.Addr) bool {
			if !ip.IsValid() {
				return false
			}
			for _, p := range trust {
				if p.Contains(ip) {
					return true
				}
			}
			return false
		}

		in := &http.Request{RemoteAddr: remote, Host: host, Header: http.Header{}}
		if isTLS {
			in.TLS = &tls.ConnectionState{}
		}
		if xff != "" {
			in.Header["X-Forwarded-For"] = strings.Split(xff, "\n")
		}
		in.Header["X-Forwarded-Proto"] = []string{"gopher"}
		in.Header["X-Forwarded-Host"] = []string{"evil.example"}
		orig := in.Header.Clone()
		out := &http.Request{Header: in.Header.Clone()}

		client := h.setForwarded(in, out, new([2]string))

		if !reflect.DeepEqual(in.Header, orig) {
			t.Fatalf("setForwarded mutated the inbound header: %q", in.Header)
		}
		if client.IsValid() && client.Is4In6() {
			t.Errorf("client IP %v is IPv4-mapped", client)
		}
		peer := fuzzPeer(remote)
		proto := "http"
		if isTLS {
			proto = "https"
		}
		if !trusted(peer) {
			if client != peer {
				t.Errorf("untrusted peer %q: client IP %v, want the peer %v", remote, client, peer)
			}
			if peer.IsValid() {
				if got := out.Header["X-Forwarded-For"]; !reflect.DeepEqual(got, []string{peer.String()}) {
					t.Errorf("untrusted peer %q: X-Forwarded-For %q, want exactly [%s]", remote, got, peer)
				}
			} else if got, ok := out.Header["X-Forwarded-For"]; ok {
				t.Errorf("peer %q is not an IP: X-Forwarded-For %q, want none", remote, got)
			}
			if got := out.Header["X-Forwarded-Proto"]; !reflect.DeepEqual(got, []string{proto}) {
				t.Errorf("untrusted peer: X-Forwarded-Proto %q, want [%s]", got, proto)
			}
			want := []string{host}
			if host == "" {
				want = nil
			}
			if got := out.Header["X-Forwarded-Host"]; !reflect.DeepEqual(got, want) {
				t.Errorf("untrusted peer: X-Forwarded-Host %q, want %q", got, want)
			}
			return
		}

		// Trusted peer.
		want := fuzzClientFromChain(orig["X-Forwarded-For"], peer, trusted)
		if client != want {
			t.Errorf("trusted peer %q, chain %q: client IP %v, want %v", remote, orig["X-Forwarded-For"], client, want)
		}
		got := out.Header["X-Forwarded-For"]
		if len(got) != 1 || !strings.HasSuffix(got[0], peer.String()) {
			t.Errorf("trusted peer %q: X-Forwarded-For %q does not end with the peer", remote, got)
		}
		if prior := orig["X-Forwarded-For"]; len(prior) > 0 && len(got) == 1 &&
			got[0] != strings.Join(prior, ", ")+", "+peer.String() {
			t.Errorf("trusted peer %q: X-Forwarded-For %q, want the chain %q and the peer", remote, got, prior)
		}
	})
}

// fuzzPathPart is the path of a request-target as received (RFC 3986 §3):
// for origin-form everything before '?'; for absolute-form, after
// scheme ":" and, when "//" follows, after the authority (which ends at the
// first '/', '?' or '#'), up to '?'.
func fuzzPathPart(target string) string {
	p := target
	if !strings.HasPrefix(p, "/") {
		i := 0
		for i < len(p) && (fuzzIsAlpha(p[i]) || i > 0 && (p[i] >= '0' && p[i] <= '9' || strings.IndexByte("+-.", p[i]) >= 0)) {
			i++
		}
		if i == 0 || i == len(p) || p[i] != ':' {
			return ""
		}
		p = p[i+1:]
		if rest, ok := strings.CutPrefix(p, "//"); ok {
			j := strings.IndexAny(rest, "/?#")
			if j < 0 {
				return ""
			}
			p = rest[j:]
		}
		if !strings.HasPrefix(p, "/") {
			return "" // opaque, or no path before the query
		}
	}
	p, _, _ = strings.Cut(p, "?")
	return p
}

func fuzzIsAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// FuzzRawPath: for any request-target net/http accepts, rawPath never
// returns something that starts with "//" (a transport would take it as an
// authority), returns the target's path part exactly as received, and
// cloneRequest leaves the inbound URL untouched and forwards a target that
// names the same path and query the proxy saw (and routed on).
func FuzzRawPath(f *testing.F) {
	f.Add("/a%2Fb//c?x=1;y=2")
	f.Fuzz(func(t *testing.T, target string) {
		// rawPath on any string at all.
		raw := rawPath(target)
		if strings.HasPrefix(raw, "//") {
			t.Fatalf("rawPath(%q) = %q starts with //", target, raw)
		}
		if raw != "" {
			if raw[0] != '/' || strings.IndexByte(raw, '?') >= 0 {
				t.Fatalf("rawPath(%q) = %q is not a path", target, raw)
			}
			if !strings.Contains(target, raw) {
				t.Fatalf("rawPath(%q) = %q is not from the input", target, raw)
			}
		}

		// What the server would do with it.
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(
			"GET " + target + " HTTP/1.1\r\nHost: example.com\r\n\r\n")))
		if err != nil || in.RequestURI != target {
			return
		}
		if want := fuzzPathPart(target); raw != "" && raw != want {
			// Was a bug, fixed in 3c35655: see TestRawPathForwardsWhatWasRouted.
			t.Fatalf("rawPath(%q) = %q, want the path part %q (URL.Path %q)", target, raw, want, in.URL.Path)
		}

		saved := *in.URL
		savedURL := in.URL
		savedHeader := in.Header.Clone()
		out := cloneForTest(in)
		if in.URL != savedURL || *in.URL != saved || in.RequestURI != target || !reflect.DeepEqual(in.Header, savedHeader) {
			t.Fatalf("cloneRequest mutated the inbound request: URL %#v, was %#v", *in.URL, saved)
		}
		if out.URL == in.URL {
			t.Fatalf("cloneRequest shares the URL")
		}
		if out.URL.Scheme != "" || out.URL.Host != "" || out.URL.User != nil {
			t.Fatalf("clone of %q keeps scheme/host/user: %#v", target, *out.URL)
		}
		if in.URL.Path == "*" {
			return // OPTIONS * style; not a path
		}
		// As an attempt does: dial somewhere, then write the target.
		out.URL.Scheme, out.URL.Host = "http", "upstream.invalid"
		sent := out.URL.RequestURI()
		got, err := url.ParseRequestURI(sent)
		if err != nil {
			t.Fatalf("target %q is forwarded as %q, which does not parse: %v", target, sent, err)
		}
		if got.Host != "" || got.Scheme != "" {
			t.Fatalf("target %q is forwarded as %q: absolute-form to %q", target, sent, got.Host)
		}
		wantPath := in.URL.Path
		if wantPath == "" {
			wantPath = "/"
		}
		if got.Path != wantPath || got.RawQuery != in.URL.RawQuery {
			// Was a bug, fixed in 3c35655: see TestRawPathForwardsWhatWasRouted.
			t.Fatalf("target %q: proxy saw path %q query %q, upstream is sent %q (path %q query %q)",
				target, in.URL.Path, in.URL.RawQuery, sent, got.Path, got.RawQuery)
		}
	})
}

// TestRawPathForwardsWhatWasRouted is the end-to-end form of the
// FuzzRawPath findings (seeds absolute-query-path, non-http-scheme,
// opaque-target): the path the upstream is sent must be the path the proxy
// saw (r.URL.Path, what any router or access rule in front of the handler
// decides on), or the request must be refused with 400.
//
// Found by FuzzRawPath, fixed in 3c35655 (validTarget refuses non-http(s)
// absolute and opaque forms with 400; rawPath ends the authority at '/' or
// '?'). Before, rawPath looked for the first "://" anywhere in the target and
// then the first '/' after it, which disagreed with net/url:
//   - "http://example.com?x=/admin": the authority ends at '?', so URL.Path
//     is "" (routed as "/"), but the upstream was sent "/admin?x=/admin";
//   - "x:/public/://h/admin": a non-http scheme; URL.Path is
//     "/public/://h/admin", the upstream was sent "/admin" (an ACL on the
//     proxy's path is bypassed);
//   - "A:0": an opaque target; URL.Path is "", the upstream was sent the
//     request line "GET 0 HTTP/1.1" (not a valid request-target).
func TestRawPathForwardsWhatWasRouted(t *testing.T) {
	// A raw upstream records the request line exactly as sent (net/http
	// would refuse some of them before a handler could look).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			select {
			case lines <- strings.TrimRight(line, "\r\n"):
			default:
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	h, err := New(Config{
		Upstreams: upstream.NewPool(nil, upstream.New(ln.Addr().String())),
		Transport: tr,
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.URL.Path:
		default:
		}
		h.ServeHTTP(w, r)
	}))
	defer px.Close()

	for _, target := range []string{
		"http://example.com?x=/admin",
		"x:/public/://h/admin",
		"A:0",
		"http://example.com/ok?x=/admin", // control: consistent today
	} {
		t.Run(target, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(px.URL, "http://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			var path string
			select {
			case path = <-seen:
			default:
				t.Fatalf("net/http refused %q before the proxy (status %d)", target, res.StatusCode)
			}
			if path == "" {
				path = "/"
			}
			if res.StatusCode == http.StatusBadRequest {
				return // refusing is fine
			}
			var line string
			select {
			case line = <-lines:
			case <-time.After(2 * time.Second):
				t.Fatalf("status %d and nothing reached the upstream", res.StatusCode)
			}
			sent := strings.TrimSuffix(strings.TrimPrefix(line, "GET "), " HTTP/1.1")
			u, err := url.ParseRequestURI(sent)
			if err != nil || u.Path != path {
				t.Errorf("proxy saw path %q, upstream was sent %q; want the same path (or 400)", path, line)
			}
		})
	}
}

// FuzzWriteRequest: the synchronous HTTP/1.1 path serialises requests
// itself (writeRequest), so it must never let a client smuggle framing. For
// any origin-form request net/http accepts, prepared as the proxy prepares
// it, writeRequest either refuses it or writes bytes that parse back as
// exactly one request with the same method, target, headers and body, and
// nothing after it.
func FuzzWriteRequest(f *testing.F) {
	f.Add("POST", "/a?b=c", "Content-Type: text/plain\r\nX-A: 1", "hello")
	f.Fuzz(func(t *testing.T, method, target, block, body string) {
		if len(body) > maxSyncBody {
			return
		}
		raw := method + " " + target + " HTTP/1.1\r\nHost: example.com\r\n"
		if block != "" {
			raw += block + "\r\n"
		}
		raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil || !strings.HasPrefix(target, "/") || in.RequestURI != target {
			return // origin-form only: absolute and opaque forms are FuzzRawPath's
		}
		if len(in.TransferEncoding) > 0 || in.ContentLength != int64(len(body)) {
			return
		}
		in.RemoteAddr = "192.0.2.7:4711"
		h := fuzzHandler(t, Config{})
		rt := newRoundTrip(h, httptest.NewRecorder(), in)
		rt.out = cloneForTest(in)
		rt.prepare()
		out := rt.out
		out.URL.Scheme, out.URL.Host = "http", "upstream.invalid"
		var rb *replayReader
		if len(body) > 0 {
			sb := getSharedBuffer()
			sb.buf.WriteString(body)
			rb = sb.newReader().(*replayReader)
			defer rb.Close()
			defer sb.unref()
		}

		var wire strings.Builder
		bw := bufio.NewWriter(&wire)
		if err := writeRequest(bw, out, rb); err != nil {
			return // refused: the client gets a 502, nothing was smuggled
		}
		br := bufio.NewReader(strings.NewReader(wire.String()))
		got, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("writeRequest wrote an unparsable request: %v\n%q", err, wire.String())
		}
		gotBody, err := io.ReadAll(got.Body)
		if err != nil || string(gotBody) != body {
			t.Fatalf("body %q (%v), want %q\n%q", gotBody, err, body, wire.String())
		}
		if rest, _ := io.ReadAll(br); len(rest) > 0 {
			t.Fatalf("bytes after the request (a second request?): %q\n%q", rest, wire.String())
		}
		if got.Method != out.Method || got.RequestURI != out.URL.RequestURI() || got.Host != out.Host {
			t.Fatalf("request line/Host %q %q %q, want %q %q %q", got.Method, got.RequestURI, got.Host,
				out.Method, out.URL.RequestURI(), out.Host)
		}
		if len(got.TransferEncoding) > 0 {
			t.Fatalf("Transfer-Encoding %q reached the upstream", got.TransferEncoding)
		}
		for k, vv := range out.Header {
			if reqHeaderSkip(k) {
				continue
			}
			// A value can hold edge whitespace (net/http keeps the space
			// of an obs-fold at its end), but on the wire that is
			// optional whitespace around the value, which every parser
			// drops: compare what the upstream can see.
			want := make([]string, len(vv))
			for i, v := range vv {
				want[i] = textproto.TrimString(v)
			}
			if !reflect.DeepEqual(got.Header[k], want) {
				t.Errorf("header %s: upstream got %q, want %q", k, got.Header[k], want)
			}
		}
		for k := range got.Header {
			switch k {
			case "User-Agent", "Content-Length":
				continue
			case "Connection":
				if out.Close {
					continue
				}
			}
			if _, ok := out.Header[k]; !ok || reqHeaderSkip(k) {
				t.Errorf("upstream got header %s: %q that the proxy did not send", k, got.Header[k])
			}
		}
	})
}

// cloneForTest makes the outbound request from in as serve does, in
// storage of its own.
func cloneForTest(in *http.Request) *http.Request {
	out, u := new(http.Request), new(url.URL)
	cloneRequest(context.Background(), in, out, u, nil)
	return out
}
