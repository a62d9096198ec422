package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// TransportOptions tune the upstream transport. Zero values mean defaults.
type TransportOptions struct {
	DialTimeout           time.Duration // default 3s
	ResponseHeaderTimeout time.Duration // 0: no limit (slow upstreams are cut by try duration / client)
	ExpectContinueTimeout time.Duration // default 1s
	IdleConnTimeout       time.Duration // default 90s; keep below the upstreams' own keep-alive
	MaxIdleConnsPerHost   int           // default 128
	MaxConnsPerHost       int           // default 0 (unlimited)
	KeepAlive             time.Duration // TCP keep-alive probe period, default 30s
	TLSClientConfig       *tls.Config   // for https upstreams
}

// NewTransport returns an http.Transport suited to a reverse proxy: dial
// failures come back as *DialError, compression is never negotiated on the
// client's behalf, no environment proxy is used, and idle connections are
// kept per upstream.
func NewTransport(o TransportOptions) *http.Transport {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 3 * time.Second
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
	if o.KeepAlive == 0 {
		o.KeepAlive = 30 * time.Second
	}
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &DialError{Addr: addr, Err: err}
			}
			return c, nil
		},
		TLSClientConfig:       o.TLSClientConfig,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		MaxConnsPerHost:       o.MaxConnsPerHost,
		IdleConnTimeout:       o.IdleConnTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: o.ExpectContinueTimeout,
		TLSHandshakeTimeout:   o.DialTimeout,
	}
}
