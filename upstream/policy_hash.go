package upstream

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
)

// FNV-1a, stable across processes so that several proxies hash a key to the
// same upstream.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

// addrHash is an upstream's identity in rendezvous hashing.
func addrHash(addr string) uint64 { return mix(fnvString(fnvOffset, addr)) }

func (u *Upstream) hashID() uint64 {
	if u.hash != 0 {
		return u.hash
	}
	return addrHash(u.Addr) // not adopted by a pool yet
}

// hrw is rendezvous (highest random weight) hashing: every usable upstream
// scores the key and the highest score wins. Removing an upstream moves only
// the keys it won; adding one takes keys only for itself. Weights (and slow
// start) use the logarithmic method, score = w / -ln(x) with x the hash
// mapped into (0, 1); with equal weights that order is the plain hash order,
// so the cheap pass decides and the logarithms are skipped.
func hrw(ups []*Upstream, s *Selection, key uint64) *Upstream {
	var best *Upstream
	var bestScore, w0 uint64
	uniform := true
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		if w := weightOf(u); w0 == 0 {
			w0 = w
		} else if w != w0 {
			uniform = false
		}
		if sc := mix(key ^ u.hashID()); best == nil || sc > bestScore {
			best, bestScore = u, sc
		}
	}
	if uniform || best == nil {
		return best
	}
	best = nil
	bestF := math.Inf(-1)
	for _, u := range ups {
		if !s.Usable(u) {
			continue
		}
		x := (float64(mix(key^u.hashID())>>11) + 0.5) / (1 << 53)
		if f := float64(weightOf(u)) / -math.Log(x); best == nil || f > bestF {
			best, bestF = u, f
		}
	}
	return best
}

type hashSource uint8

const (
	fromIP hashSource = iota
	fromClientIP
	fromURI
	fromHeader
	fromQuery
)

// Hash sends requests with the same key to the same upstream by rendezvous
// hashing. The key is the peer IP (ip_hash), the client IP derived under
// the trusted-proxies policy (client_ip_hash), the request URI (uri_hash),
// a header (header:NAME) or a query parameter (query:NAME). When the key is
// absent the Fallback policy picks; when the key's upstream is unusable the
// next-highest scorer takes over.
type Hash struct {
	src   hashSource
	field string // canonical header name, or query key
	// Fallback picks when the request has no key. Default Random.
	Fallback Selector
}

// NewIPHash hashes the immediate peer's IP (Request.RemoteAddr).
func NewIPHash() *Hash { return &Hash{src: fromIP} }

// NewClientIPHash hashes Selection.ClientIP, or the peer IP when that is
// unset.
func NewClientIPHash() *Hash { return &Hash{src: fromClientIP} }

// NewURIHash hashes the request URI (path and query).
func NewURIHash() *Hash { return &Hash{src: fromURI} }

// NewHeaderHash hashes every value of header name ("Host" hashes
// Request.Host).
func NewHeaderHash(name string) *Hash {
	return &Hash{src: fromHeader, field: textproto.CanonicalMIMEHeaderKey(name)}
}

// NewQueryHash hashes every value of query parameter key, unescaped.
func NewQueryHash(key string) *Hash { return &Hash{src: fromQuery, field: key} }

// Name implements Named.
func (h *Hash) Name() string {
	switch h.src {
	case fromIP:
		return "ip_hash"
	case fromClientIP:
		return "client_ip_hash"
	case fromURI:
		return "uri_hash"
	case fromHeader:
		return "header:" + h.field
	default:
		return "query:" + h.field
	}
}

// Select implements Selector.
func (h *Hash) Select(ups []*Upstream, s *Selection) *Upstream {
	if key, ok := h.key(s); ok {
		return hrw(ups, s, mix(key))
	}
	if h.Fallback != nil {
		return h.Fallback.Select(ups, s)
	}
	return Random{}.Select(ups, s)
}

func (h *Hash) key(s *Selection) (uint64, bool) {
	r := s.Request
	switch h.src {
	case fromClientIP:
		if s.ClientIP.IsValid() {
			return hashAddr(s.ClientIP), true
		}
		fallthrough
	case fromIP:
		if r == nil {
			return 0, false
		}
		return hashRemoteIP(r.RemoteAddr)
	}
	if r == nil {
		return 0, false
	}
	switch h.src {
	case fromURI:
		if r.RequestURI != "" {
			return fnvString(fnvOffset, r.RequestURI), true
		}
		if r.URL == nil {
			return 0, false
		}
		k := fnvString(fnvOffset, r.URL.Path)
		if r.URL.RawQuery != "" {
			k = fnvString(fnvByte(k, '?'), r.URL.RawQuery)
		}
		return k, true
	case fromHeader:
		return hashHeader(r, h.field)
	default:
		if r.URL == nil {
			return 0, false
		}
		return hashQuery(r.URL.RawQuery, h.field)
	}
}

// hashAddr hashes an IP in its 16-byte form, so IPv4 and IPv4-mapped IPv6
// agree and ip_hash and client_ip_hash give the same key for one IP.
func hashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	k := uint64(fnvOffset)
	for _, c := range b {
		k = fnvByte(k, c)
	}
	return k
}

// hashRemoteIP hashes the IP of "ip:port" or "[ipv6]:port" without
// allocating.
func hashRemoteIP(remote string) (uint64, bool) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return hashAddr(a), true
	}
	if host == "" {
		return 0, false
	}
	return fnvString(fnvOffset, host), true // e.g. a unix socket peer name
}

func hashHeader(r *http.Request, name string) (uint64, bool) {
	if name == "Host" {
		if r.Host == "" {
			return 0, false
		}
		return fnvString(fnvOffset, r.Host), true
	}
	vs := r.Header[name]
	if len(vs) == 0 {
		return 0, false
	}
	k := uint64(fnvOffset)
	for i, v := range vs {
		if i > 0 {
			k = fnvByte(k, 0)
		}
		k = fnvString(k, v)
	}
	return k, true
}

// hashQuery hashes every value of key in a raw query, unescaping on the fly
// (url.Values would allocate a map per request). Values are joined in order,
// so adding a second value changes the key rather than being ignored.
func hashQuery(raw, key string) (uint64, bool) {
	k := uint64(fnvOffset)
	found := false
	for raw != "" {
		var seg string
		seg, raw, _ = strings.Cut(raw, "&")
		name, val, _ := strings.Cut(seg, "=")
		if !unescapedEqual(name, key) {
			continue
		}
		if found {
			k = fnvByte(k, 0)
		}
		found = true
		k = fnvUnescaped(k, val)
	}
	return k, found
}

// unescape decodes one query byte at s[i]: %XX and '+'. It returns the byte
// and how many input bytes it used; a malformed escape stands for itself.
func unescape(s string, i int) (byte, int) {
	switch c := s[i]; c {
	case '+':
		return ' ', 1
	case '%':
		if i+2 < len(s) {
			if hi, lo := unhex(s[i+1]), unhex(s[i+2]); hi < 16 && lo < 16 {
				return hi<<4 | lo, 3
			}
		}
		return c, 1
	default:
		return c, 1
	}
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 16
}

func unescapedEqual(raw, want string) bool {
	j := 0
	for i := 0; i < len(raw); {
		c, n := unescape(raw, i)
		if j >= len(want) || want[j] != c {
			return false
		}
		i += n
		j++
	}
	return j == len(want)
}

func fnvUnescaped(k uint64, raw string) uint64 {
	for i := 0; i < len(raw); {
		c, n := unescape(raw, i)
		k = fnvByte(k, c)
		i += n
	}
	return k
}
