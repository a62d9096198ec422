package upstream

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// Sticky sessions over real HTTP: a browser-like client with a cookie jar
// is pinned to one upstream, re-pinned when it goes down, and a forged or
// foreign cookie is ignored.
func TestCookieRoundTrip(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ups := testUps(4)
	pol, err := PolicyByName("cookie:sticky", WithCookie(CookieConfig{Secret: "s3cret", MaxAge: 3600e9}))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(pol, ups...)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What the proxy does: select with the writer so the policy can
		// set its cookie before the response headers go out.
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		u, err := p.Select(&Selection{Request: r, Writer: w})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer p.Release(u, Outcome{Kind: Success, Status: 200})
		io.WriteString(w, u.Addr)
	}))
	defer front.Close()
	tr := newTransport(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Transport: tr, Jar: jar}
	get := func(c *http.Client) (string, *http.Response) {
		t.Helper()
		resp, err := c.Get(front.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b), resp
	}

	first, resp := get(client)
	sc := resp.Header.Values("Set-Cookie")
	if len(sc) != 2 || !strings.HasPrefix(sc[1], "sticky=") || !strings.Contains(sc[1], "HttpOnly") ||
		!strings.Contains(sc[1], "Max-Age=3600") || !strings.Contains(sc[1], "SameSite=Lax") {
		t.Fatalf("Set-Cookie = %q", sc)
	}
	if strings.Contains(sc[1], first) {
		t.Error("cookie reveals the upstream address")
	}
	for range 50 {
		if got, resp := get(client); got != first || len(resp.Header.Values("Set-Cookie")) != 1 {
			t.Fatalf("sticky request went to %s (want %s), Set-Cookie %q", got, first, resp.Header.Values("Set-Cookie"))
		}
	}

	// Its upstream goes down: re-pinned elsewhere with a new cookie.
	for _, u := range ups {
		if u.Addr == first {
			u.SetDown(true)
		}
	}
	second, resp := get(client)
	if second == first || len(resp.Header.Values("Set-Cookie")) != 2 {
		t.Fatalf("after down: %s, Set-Cookie %q", second, resp.Header.Values("Set-Cookie"))
	}
	for range 20 {
		if got, _ := get(client); got != second {
			t.Fatalf("re-pinned request went to %s, want %s", got, second)
		}
	}

	// A forged cookie, or one made with another secret, is not trusted.
	for _, v := range []string{"sticky=" + strings.Repeat("ab", 32), "sticky=" + hmacHex("other", second), "sticky=zz"} {
		req, _ := http.NewRequest("GET", front.URL, nil)
		req.Header.Set("Cookie", v)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if len(resp.Header.Values("Set-Cookie")) != 2 {
			t.Errorf("cookie %q accepted", v)
		}
	}
	// The right MAC for a known address is accepted.
	req, _ := http.NewRequest("GET", front.URL, nil)
	req.Header.Set("Cookie", "a=b; sticky="+hmacHex("s3cret", second)+"; c=d")
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != second {
		t.Errorf("valid cookie sent to %s, want %s", b, second)
	}
}

func hmacHex(secret, addr string) string {
	c := NewCookie(CookieConfig{Secret: secret})
	c.learn([]*Upstream{New(addr)})
	return c.tags.Load().byAddr[addr]
}

// A retry that lands elsewhere replaces the cookie, not adds one.
func TestCookieReplacedOnRetry(t *testing.T) {
	ups := testUps(2)
	c := NewCookie(CookieConfig{Fallback: First{}})
	p := NewPool(c, ups...)
	w := httptest.NewRecorder()
	w.Header().Add("Set-Cookie", "other=1")
	s := &Selection{Request: httptest.NewRequest("GET", "/", nil), Writer: w}
	u1, _ := p.Select(s)
	p.Release(u1, Outcome{Kind: Failure})
	s.Tried.Add(u1)
	u2, _ := p.Select(s)
	p.Release(u2, Outcome{})
	sc := w.Header().Values("Set-Cookie")
	if len(sc) != 2 || sc[0] != "other=1" || !strings.HasPrefix(sc[1], "lb="+c.tags.Load().byAddr[u2.Addr]) {
		t.Errorf("Set-Cookie after retry = %q", sc)
	}
	// TLS requests get Secure.
	r := httptest.NewRequest("GET", "https://x/", nil)
	w = httptest.NewRecorder()
	u, _ := p.Select(&Selection{Request: r, Writer: w})
	p.Release(u, Outcome{})
	if v := w.Header().Get("Set-Cookie"); !strings.Contains(v, "Secure; SameSite=None") {
		t.Errorf("TLS cookie %q", v)
	}
}
