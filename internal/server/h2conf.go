package server

import "net/http"

// HTTP/2 limits. net/http's own defaults are 250 concurrent streams and
// 1 MiB frames; sluice is an edge proxy, where every stream is also an
// upstream request, so it uses the tighter values most edge servers use.
const (
	// DefaultMaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS a
	// client gets: how many requests one connection may have in flight.
	// 100 is RFC 9113's recommended minimum and what Apache httpd, Envoy's
	// edge guidance and Google's front ends use (nginx: 128). net/http also
	// runs at most this many handlers per connection and queues the rest
	// (the Rapid Reset mitigation), closing the connection with
	// ENHANCE_YOUR_CALM when the queue passes 4x this.
	DefaultMaxConcurrentStreams = 100
	// DefaultMaxReadFrameSize is the SETTINGS_MAX_FRAME_SIZE advertised:
	// the protocol's initial 16 KiB instead of net/http's 1 MiB. A
	// connection keeps a read buffer as large as the largest frame it got,
	// so this bounds what one idle connection pins at 16 KiB. Browsers
	// and curl send 16 KiB frames anyway.
	DefaultMaxReadFrameSize = 16 << 10
)

// http2Config is the HTTP/2 configuration of the server (TLS and h2c alike).
// o has its defaults applied.
func http2Config(o Options) *http.HTTP2Config {
	c := &http.HTTP2Config{
		MaxConcurrentStreams: DefaultMaxConcurrentStreams,
		MaxReadFrameSize:     DefaultMaxReadFrameSize,
	}
	// A connection that has frames to send and cannot send a byte for this
	// long is closed: the client stopped reading the socket (slow read at
	// the TCP level). A stream the client starves through flow control is
	// bounded per write by the same timeout in writetimeout.go.
	if d := o.writeIdleTimeout(); d > 0 {
		c.WriteByteTimeout = d
	}
	return c
}
