// Command httputilproxy is the baseline of the benchmark harness
// (bench/run.sh): the standard library's httputil.ReverseProxy, configured
// the way a careful user would (pooled copy buffers, a keep-alive pool large
// enough for the load, no logging), so that sluice can be compared with what
// ten lines of net/http give.
//
// It accepts HTTP/1.1 and cleartext HTTP/2 with prior knowledge (h2c) and
// talks HTTP/1.1 with keep-alive to its one upstream.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// bufferPool implements httputil.BufferPool with a sync.Pool of 32 KiB buffers.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (bp *bufferPool) Get() []byte  { return *(bp.p.Get().(*[]byte)) }
func (bp *bufferPool) Put(b []byte) { bp.p.Put(&b) }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	to := flag.String("to", "", "upstream host:port")
	flag.Parse()
	if *to == "" {
		log.Fatal("httputilproxy: -to host:port is required")
	}
	target, err := url.Parse("http://" + *to)
	if err != nil {
		log.Fatalf("httputilproxy: bad -to: %v", err)
	}

	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   4096,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		DisableCompression:    true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:  transport,
		BufferPool: newBufferPool(),
		ErrorLog:   log.New(io.Discard, "", 0),
	}

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           rp,
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	log.Fatal(srv.ListenAndServe())
}
