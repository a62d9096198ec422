package upstream

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testUps returns n upstreams named 10.0.0.i:80 adopted by a plain pool.
func testUps(n int) []*Upstream {
	ups := make([]*Upstream, n)
	for i := range ups {
		ups[i] = New(fmt.Sprintf("10.0.0.%d:80", i+1))
	}
	return ups
}

// countPicks runs n selections through p (each released at once) and
// counts picks per address.
func countPicks(t *testing.T, p *Pool, s *Selection, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		u, err := p.Select(s)
		if err != nil {
			t.Fatalf("Select: %v", err)
		}
		got[u.Addr]++
		p.Release(u, Outcome{Kind: Success, Status: 200, Latency: time.Millisecond})
	}
	return got
}

// within fails unless got is within tol (a fraction) of want.
func within(t *testing.T, what string, got, want int, tol float64) {
	t.Helper()
	if math.Abs(float64(got-want)) > tol*float64(want) {
		t.Errorf("%s: got %d, want %d ± %.0f%%", what, got, want, tol*100)
	}
}

// backend is a real HTTP server that can be killed and revived on the same
// address.
type backend struct {
	t      *testing.T
	addr   string
	srv    *httptest.Server
	hits   atomic.Int64
	status atomic.Int32 // answer status; 0 = 200
	h      http.Handler
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{t: t}
	b.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if st := b.status.Load(); st != 0 {
			w.WriteHeader(int(st))
		}
		io.WriteString(w, b.addr)
	})
	b.srv = httptest.NewServer(b.h)
	b.addr = b.srv.Listener.Addr().String()
	t.Cleanup(b.kill)
	return b
}

// newBackendOn starts a backend on a given address (e.g. a second loopback
// IP with the same port as another backend).
func newBackendOn(t *testing.T, addr string) (*backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &backend{t: t, addr: addr}
	b.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.WriteString(w, b.addr)
	})
	b.start(ln)
	t.Cleanup(b.kill)
	return b, nil
}

func (b *backend) start(ln net.Listener) {
	b.srv = httptest.NewUnstartedServer(b.h)
	b.srv.Listener.Close()
	b.srv.Listener = ln
	b.srv.Start()
}

func (b *backend) kill() {
	if b.srv != nil {
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.srv = nil
	}
}

// revive listens on the old address again.
func (b *backend) revive() {
	b.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("revive %s: %v", b.addr, err)
	}
	b.start(ln)
}

// proxyOnce does what the proxy does for one request: select, round trip
// over a real socket, release with the outcome. It returns the upstream
// used (nil when Select failed).
func proxyOnce(p *Pool, tr http.RoundTripper) (*Upstream, int, error) {
	s := &Selection{Request: httptest.NewRequest("GET", "/", nil)}
	u, err := p.Select(s)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	req, _ := http.NewRequest("GET", "http://"+u.Addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		p.Release(u, Outcome{Kind: Failure, Latency: time.Since(start)})
		return u, 0, err
	}
	lat := time.Since(start)
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		p.Release(u, Outcome{Kind: Failure, Status: resp.StatusCode, Latency: lat})
		return u, resp.StatusCode, err
	}
	p.Release(u, Outcome{Kind: Success, Status: resp.StatusCode, Latency: lat})
	return u, resp.StatusCode, nil
}

// newTransport is a per-test transport; its idle connections are closed at
// the end so goleak sees no stray goroutines.
func newTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// eventually polls cond every 5ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, d)
	return 0
}

func statusOf(p *Pool, addr string) UpstreamStatus {
	for _, us := range p.Status().Upstreams {
		if us.Addr == addr {
			return us
		}
	}
	return UpstreamStatus{}
}

// TestMain also checks that the package as a whole leaves no goroutine
// behind (tests that start goroutines check themselves too).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
