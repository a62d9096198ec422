package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"
)

// TransportOptions tune the upstream transport. Zero values mean defaults.
type TransportOptions struct {
	DialTimeout             time.Duration // default 3s
	ResponseHeaderTimeout   time.Duration // default 60s (nginx's proxy_read_timeout); negative: no limit
	ExpectContinueTimeout   time.Duration // default 1s
	IdleConnTimeout         time.Duration // default 90s; keep below the upstreams' own keep-alive
	MaxIdleConnsPerHost     int           // default 128
	MaxConnsPerHost         int           // default 0 (unlimited); applies to the net/http path only
	MaxResponseHeaderBytes  int64         // default 1 MiB
	KeepAlive               time.Duration // TCP keep-alive probe period, default 30s
	TLSClientConfig         *tls.Config   // for https upstreams
	DisableSynchronousHTTP1 bool          // always use net/http's Transport
	// NoPeerYield keeps the synchronous HTTP/1.1 path from yielding its CPU
	// after it writes a request while no other exchange awaits an answer
	// (Transport.exchange says why it does).
	NoPeerYield bool
}

// Transport sends requests upstream. Plain-HTTP/1.1 requests without an
// upgrade, an Expect header or a streaming body (the bulk of proxied
// traffic) are written and answered on the calling goroutine over pooled
// keep-alive connections: no goroutine hand-offs, no per-request contexts.
// Everything else (TLS and HTTP/2 upstreams, upgrades, 100-continue,
// streaming bodies) goes through net/http's Transport, configured alike.
// Both report dial failures as *DialError and never negotiate compression.
type Transport struct {
	opts   TransportOptions
	std    *http.Transport
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*h1conn // per address, most recently used last

	// awaiting counts synchronous exchanges between the request's last
	// byte and the response's head.
	awaiting atomic.Int32
}

// forceNetHTTP makes every transport use net/http's path. Tests set it (see
// export_test.go) to run the whole behaviour suite against both paths.
var forceNetHTTP bool

// NewTransport returns the transport a Handler uses by default.
func NewTransport(o TransportOptions) *Transport {
	if forceNetHTTP {
		o.DisableSynchronousHTTP1 = true
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 3 * time.Second
	}
	switch {
	case o.ResponseHeaderTimeout == 0:
		o.ResponseHeaderTimeout = 60 * time.Second
	case o.ResponseHeaderTimeout < 0:
		o.ResponseHeaderTimeout = 0
	}
	if o.ExpectContinueTimeout <= 0 {
		o.ExpectContinueTimeout = time.Second
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 128
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = 1 << 20
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 30 * time.Second
	}
	t := &Transport{
		opts:   o,
		dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive},
		idle:   make(map[string][]*h1conn),
	}
	t.std = &http.Transport{
		Proxy:                  nil,
		DialContext:            t.dial,
		TLSClientConfig:        o.TLSClientConfig,
		ForceAttemptHTTP2:      true,
		DisableCompression:     true,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		MaxConnsPerHost:        o.MaxConnsPerHost,
		IdleConnTimeout:        o.IdleConnTimeout,
		ResponseHeaderTimeout:  o.ResponseHeaderTimeout,
		ExpectContinueTimeout:  o.ExpectContinueTimeout,
		TLSHandshakeTimeout:    o.DialTimeout,
		MaxResponseHeaderBytes: o.MaxResponseHeaderBytes,
	}
	return t
}

// dial connects to addr; a failure is a *DialError: nothing was sent.
func (t *Transport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	return c, nil
}

// RoundTrip implements http.RoundTripper. A Got1xxResponse hook of an
// httptrace.ClientTrace in the request's context is honoured on both paths.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if body, ok := t.synchronous(req); ok {
		var info got1xxFunc
		if tr := httptrace.ContextClientTrace(req.Context()); tr != nil && tr.Got1xxResponse != nil {
			info = traceGot1xx{tr}
		}
		return t.roundTripH1(req, body, info, nil)
	}
	return t.roundTripStd(req)
}

// roundTripTraced is RoundTrip for the Handler: 1xx responses go to info
// directly on the synchronous path, with no context wrapper or closure
// (three allocations per request); net/http's path gets them through a
// trace in the context. On the synchronous path the response is parsed
// into the caller's storage, and sync reports that path: nothing of req
// or the response is used after the body is closed. net/http's Transport
// may still write the request from its own goroutines after that.
func (t *Transport) roundTripTraced(req *http.Request, info *informational, into *upstreamResponse) (res *http.Response, sync bool, err error) {
	if body, ok := t.synchronous(req); ok {
		res, err = t.roundTripH1(req, body, info, into)
		return res, true, err
	}
	trace := &httptrace.ClientTrace{Got1xxResponse: info.got1xx}
	res, err = t.roundTripStd(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	return res, false, err
}

// got1xxFunc receives the 1xx responses the synchronous path reads; nil
// when nobody listens (their bytes then share one header budget).
type got1xxFunc interface {
	got1xx(code int, header textproto.MIMEHeader) error
}

// traceGot1xx hands 1xx responses to a caller's httptrace hook.
type traceGot1xx struct{ t *httptrace.ClientTrace }

func (g traceGot1xx) got1xx(code int, header textproto.MIMEHeader) error {
	return g.t.Got1xxResponse(code, header)
}

// roundTripStd uses net/http's Transport. It does the TLS handshake (and
// proxy CONNECT) outside DialContext, so those failures would not be
// *DialError; a trace tells us whether a connection was ever had, and
// without one nothing was sent.
func (t *Transport) roundTripStd(req *http.Request) (*http.Response, error) {
	var gotConn atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }}
	res, err := t.std.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil && !gotConn.Load() && req.Context().Err() == nil {
		var de *DialError
		if !errors.As(err, &de) {
			err = &DialError{Addr: req.URL.Host, Err: err}
		}
	}
	return res, err
}

// maxSyncBody is the largest in-memory body written on the calling goroutine
// before the response is read. It fits the socket buffers, so an upstream
// that answers early without reading cannot block the write.
const maxSyncBody = 64 << 10

// synchronous reports whether req can take the synchronous HTTP/1.1 path,
// and returns its in-memory body if it has one.
func (t *Transport) synchronous(req *http.Request) (*replayReader, bool) {
	if t.opts.DisableSynchronousHTTP1 || req.URL.Scheme != "http" || req.Method == http.MethodConnect {
		return nil, false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return nil, false
	}
	if _, ok := req.Header["Expect"]; ok {
		return nil, false
	}
	switch b := req.Body.(type) {
	case nil:
		return nil, true
	case *replayReader:
		if req.ContentLength >= 0 && int64(b.r.Len()) == req.ContentLength && req.ContentLength <= maxSyncBody {
			return b, true
		}
	}
	if req.Body == http.NoBody {
		return nil, true
	}
	return nil, false
}

// CloseIdleConnections closes every idle upstream connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*h1conn)
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.close()
		}
	}
	t.std.CloseIdleConnections()
}
