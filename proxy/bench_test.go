package proxy_test

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sluiceproxy/sluice/internal/testkit"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// discardWriter is a minimal ResponseWriter so the benchmark measures the
// proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

var smallBody = strings.Repeat("x", 100)

// rawBackend answers every request on a keep-alive connection with a fixed
// small response, parsing no more than it must: it allocates almost nothing,
// so allocation counts and profiles show the proxy, not the backend. It only
// handles bodiless requests.
func rawBackend(tb testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + smallBody)
	return testkit.ServeConns(tb, func(c net.Conn) {
		buf := make([]byte, 4096)
		var pending []byte
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.Index(pending, []byte("\r\n\r\n"))
				if i < 0 {
					break
				}
				pending = pending[:copy(pending, pending[i+4:])]
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
}

func benchRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://example.com/some/path?q=1", nil)
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("Accept", "*/*")
	r.RemoteAddr = "192.0.2.10:51000"
	return r
}

func runBench(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: make(http.Header)}
		r := benchRequest()
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, r)
		}
	})
}

// benchHandler is a proxy in front of addr with the given transport
// options; its idle connections are closed when tb ends.
func benchHandler(tb testing.TB, addr string, o proxy.TransportOptions) http.Handler {
	tr := proxy.NewTransport(o)
	tb.Cleanup(tr.CloseIdleConnections)
	h, err := proxy.New(proxy.Config{
		Upstreams: upstream.NewPool(nil, upstream.New(addr)),
		Transport: tr,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// BenchmarkServeHTTP is a small GET through proxy.Handler on each upstream
// path, and the same GET through httputil.ReverseProxy with net/http's
// Transport, for comparison.
func BenchmarkServeHTTP(b *testing.B) {
	addr := rawBackend(b)
	b.Run("sluice", func(b *testing.B) {
		runBench(b, benchHandler(b, addr, proxy.TransportOptions{}))
	})
	b.Run("sluice-nethttp", func(b *testing.B) {
		runBench(b, benchHandler(b, addr, proxy.TransportOptions{DisableSynchronousHTTP1: true}))
	})

	b.Run("httputil", func(b *testing.B) {
		// As its users run it: net/http's Transport and a buffer pool.
		tr := &http.Transport{MaxIdleConnsPerHost: 128, DisableCompression: true}
		defer tr.CloseIdleConnections()
		target, _ := url.Parse("http://" + addr)
		rp := &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport:  tr,
			BufferPool: &bytePool{},
		}
		runBench(b, rp)
	})
}

type bytePool struct{ p sync.Pool }

func (bp *bytePool) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}
func (bp *bytePool) Put(b []byte) { bp.p.Put(&b) }
