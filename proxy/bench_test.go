package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

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

func benchBackend(b *testing.B) *httptest.Server {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, smallBody)
	}))
	b.Cleanup(be.Close)
	return be
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

// BenchmarkServeHTTP is a small GET through proxy.Handler, and the same GET
// through httputil.ReverseProxy with the same transport, for comparison.
func BenchmarkServeHTTP(b *testing.B) {
	be := benchBackend(b)
	addr := strings.TrimPrefix(be.URL, "http://")

	b.Run("sluice", func(b *testing.B) {
		tr := proxy.NewTransport(proxy.TransportOptions{})
		defer tr.CloseIdleConnections()
		h, err := proxy.New(proxy.Config{
			Upstreams: upstream.NewPool(nil, upstream.New(addr)),
			Transport: tr,
		})
		if err != nil {
			b.Fatal(err)
		}
		runBench(b, h)
	})

	b.Run("httputil", func(b *testing.B) {
		tr := proxy.NewTransport(proxy.TransportOptions{})
		defer tr.CloseIdleConnections()
		target, _ := url.Parse(be.URL)
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
