package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newProxy starts a proxy in front of the given upstream servers.
func newProxy(t *testing.T, cfg proxy.Config, backends ...*httptest.Server) *httptest.Server {
	t.Helper()
	var ups []*upstream.Upstream
	for _, b := range backends {
		ups = append(ups, upstream.New(strings.TrimPrefix(b.URL, "http://")))
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = upstream.NewPool(nil, ups...)
	}
	h, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := frontServer(t, h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv
}

func TestSmokeGET(t *testing.T) {
	var got *http.Request
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		w.Header().Set("X-Up", "1")
		io.WriteString(w, "hello "+r.URL.RequestURI())
	}))
	defer be.Close()
	px := newProxy(t, proxy.Config{}, be)
	res, err := http.Get(px.URL + "/a%2Fb//c?x=1;y=2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "hello /a%2Fb//c?x=1;y=2" || res.Header.Get("X-Up") != "1" {
		t.Fatalf("got %d %q %v", res.StatusCode, body, res.Header)
	}
	if got.Header.Get("X-Forwarded-For") != "127.0.0.1" || got.Header.Get("X-Forwarded-Proto") != "http" {
		t.Fatalf("forwarded headers: %v", got.Header)
	}
	if _, ok := got.Header["User-Agent"]; ok && got.Header.Get("User-Agent") != "Go-http-client/1.1" {
		t.Fatalf("UA %q", got.Header.Get("User-Agent"))
	}
}

func httpNewRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.RemoteAddr = "192.0.2.1:1234"
	return r
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }
