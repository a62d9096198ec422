package upstream

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CookieConfig configures sticky sessions (NewCookie).
type CookieConfig struct {
	// Name of the cookie. Default "lb".
	Name string
	// Secret keys the HMAC that names the upstream in the cookie, so the
	// cookie neither reveals backend addresses nor can be forged to pick
	// one. Default a random secret made once per process: stickiness then
	// survives reloads but not restarts, and is not shared between proxies.
	Secret string
	// MaxAge of the cookie; 0 = a session cookie.
	MaxAge time.Duration
	// Fallback picks for requests without a valid cookie, or whose
	// upstream is unusable; the pick is then written as a new cookie.
	// Default Random.
	Fallback Selector
}

// Cookie is sticky sessions: a request carrying the cookie goes to the
// upstream it names while that upstream is usable; any other request is
// placed by the fallback policy and told, via Selection.Writer, where it
// went. The cookie value is hex(HMAC-SHA256(secret, address)).
type Cookie struct {
	name     string
	secret   []byte
	maxAge   int
	fallback Selector

	mu   sync.Mutex // serialises learning new addresses
	tags atomic.Pointer[cookieTags]
}

// cookieTags maps MACs to addresses and back. It is replaced, never
// modified, so the hot path reads it without a lock.
type cookieTags struct {
	byMAC  map[[sha256.Size]byte]string
	byAddr map[string]string // address -> cookie value
}

var processSecret = sync.OnceValue(func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on supported platforms
	return b
})

// NewCookie returns a sticky-session policy.
func NewCookie(cfg CookieConfig) *Cookie {
	c := &Cookie{name: cfg.Name, secret: []byte(cfg.Secret), maxAge: int(cfg.MaxAge / time.Second), fallback: cfg.Fallback}
	if c.name == "" {
		c.name = "lb"
	}
	if len(c.secret) == 0 {
		c.secret = processSecret()
	}
	if c.fallback == nil {
		c.fallback = Random{}
	}
	c.tags.Store(&cookieTags{byMAC: map[[sha256.Size]byte]string{}, byAddr: map[string]string{}})
	return c
}

// Name implements Named.
func (c *Cookie) Name() string {
	if c.name == "lb" {
		return "cookie"
	}
	return "cookie:" + c.name
}

// Select implements Selector. A request with a valid cookie for a usable
// upstream allocates nothing.
func (c *Cookie) Select(ups []*Upstream, s *Selection) *Upstream {
	if s.Request != nil {
		if v, ok := findCookie(s.Request.Header["Cookie"], c.name); ok {
			if u := c.lookup(ups, s, v); u != nil {
				return u
			}
		}
	}
	u := c.fallback.Select(ups, s)
	if u != nil && s.Writer != nil {
		c.setCookie(s, u)
	}
	return u
}

func (c *Cookie) lookup(ups []*Upstream, s *Selection, v string) *Upstream {
	var mac [sha256.Size]byte
	if len(v) != 2*len(mac) {
		return nil
	}
	for i := range mac {
		hi, lo := unhex(v[2*i]), unhex(v[2*i+1])
		if hi > 15 || lo > 15 {
			return nil
		}
		mac[i] = hi<<4 | lo
	}
	addr, ok := c.tags.Load().byMAC[mac]
	if !ok {
		// Unknown MAC: either an address we have not hashed yet (after a
		// restart or a discovery change) or a bad cookie. Learning costs
		// something only in the first case.
		if !c.learn(ups) {
			return nil
		}
		if addr, ok = c.tags.Load().byMAC[mac]; !ok {
			return nil
		}
	}
	for _, u := range ups {
		if u.Addr == addr && s.Usable(u) {
			return u
		}
	}
	return nil
}

// learn adds the MACs of addresses in ups not seen before and reports
// whether there were any.
func (c *Cookie) learn(ups []*Upstream) bool {
	t := c.tags.Load()
	missing := false
	for _, u := range ups {
		if _, ok := t.byAddr[u.Addr]; !ok {
			missing = true
			break
		}
	}
	if !missing {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t = c.tags.Load()
	// Keep what we know, unless discovery churn has grown it well past the
	// current set; then start again from the current set.
	keepOld := len(t.byAddr) <= 4*len(ups)+64
	nt := &cookieTags{byMAC: make(map[[sha256.Size]byte]string), byAddr: make(map[string]string)}
	if keepOld {
		for a, v := range t.byAddr {
			nt.byAddr[a] = v
		}
		for m, a := range t.byMAC {
			nt.byMAC[m] = a
		}
	}
	for _, u := range ups {
		if _, ok := nt.byAddr[u.Addr]; ok {
			continue
		}
		m := hmac.New(sha256.New, c.secret)
		m.Write([]byte(u.Addr))
		var mac [sha256.Size]byte
		copy(mac[:], m.Sum(nil))
		nt.byMAC[mac] = u.Addr
		nt.byAddr[u.Addr] = hex.EncodeToString(mac[:])
	}
	c.tags.Store(nt)
	return true
}

// setCookie tells the client which upstream it got. A retry that lands
// elsewhere replaces the cookie set by the earlier attempt rather than
// adding a second one; other Set-Cookie headers are left alone.
func (c *Cookie) setCookie(s *Selection, u *Upstream) {
	v, ok := c.tags.Load().byAddr[u.Addr]
	if !ok {
		c.learn([]*Upstream{u})
		if v, ok = c.tags.Load().byAddr[u.Addr]; !ok {
			return
		}
	}
	var b strings.Builder
	b.WriteString(c.name)
	b.WriteByte('=')
	b.WriteString(v)
	b.WriteString("; Path=/; HttpOnly")
	if s.Request != nil && s.Request.TLS != nil {
		// Cross-site embeds keep their stickiness over HTTPS.
		b.WriteString("; Secure; SameSite=None")
	} else {
		b.WriteString("; SameSite=Lax")
	}
	if c.maxAge > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.Itoa(c.maxAge))
	}
	h := s.Writer.Header()
	prefix := c.name + "="
	for i, line := range h["Set-Cookie"] {
		if strings.HasPrefix(line, prefix) {
			h["Set-Cookie"][i] = b.String()
			return
		}
	}
	h["Set-Cookie"] = append(h["Set-Cookie"], b.String())
}

// findCookie returns the value of cookie name from Cookie header lines
// without allocating (Request.Cookie parses every cookie into a slice).
func findCookie(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}
