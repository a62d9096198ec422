// Package proxy is sluice's round trip: an http.Handler that forwards one
// client request to an upstream chosen by an upstream.Pool, retrying safely,
// and streams the answer back.
//
// It imports no configuration or CLI package. A Go program builds a Handler in
// a few lines:
//
//	pool := upstream.NewPool(nil, upstream.New("127.0.0.1:9000"), upstream.New("127.0.0.1:9001"))
//	h, err := proxy.New(proxy.Config{Upstreams: pool})
//	if err != nil { ... }
//	http.ListenAndServe(":8080", h)
package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/upstream"
)

// DefaultMaxRequestBuffer is how much of a request body is buffered so the
// request can be retried: 1 MiB.
const DefaultMaxRequestBuffer = 1 << 20

// Config is everything a Handler needs. Zero values mean the documented
// defaults, so Config{Upstreams: pool} is a careful proxy.
type Config struct {
	// Upstreams picks where each request goes. Required.
	Upstreams *upstream.Pool

	// Transport sends requests upstream. Default: NewTransport(TransportOptions{}).
	// A custom transport should wrap dial failures in *DialError (see
	// NewTransport) so they are retried, and must not negotiate compression.
	Transport http.RoundTripper

	// Retry says when and how often a failed attempt is tried again.
	Retry RetryPolicy

	// MaxRequestBuffer is how many bytes of a request body are held in memory
	// so the body can be sent again on a retry. Larger bodies stream and are
	// retried only after a dial error. 0 means DefaultMaxRequestBuffer; a
	// negative value disables buffering.
	MaxRequestBuffer int64

	// FlushInterval: 0 flushes only when the copy buffer is full or the body
	// ends, a negative value flushes after every write, a positive value
	// flushes at most that long after a write. Streams (text/event-stream)
	// and responses of unknown length are always flushed after every write.
	FlushInterval time.Duration

	// TrustedProxies are the peers whose X-Forwarded-* headers are believed.
	// From anyone else those headers are replaced, never appended to.
	TrustedProxies []netip.Prefix

	// HeaderUp and HeaderDown edit request headers sent upstream and response
	// headers sent to the client.
	HeaderUp, HeaderDown []HeaderRule

	// Upgrades lists the Upgrade tokens forwarded (case-insensitive).
	// Default: websocket. "h2c" is never forwarded, even if listed.
	Upgrades []string

	// Logger receives error and debug logs. Default: slog.Default().
	Logger *slog.Logger
	// AccessLog, when set, receives one line per request.
	AccessLog *slog.Logger

	// Observe, when set, is called once per request, after the response
	// is complete, with its Summary. It runs on the request's goroutine,
	// before ServeHTTP returns: under net/http's server the client waits
	// for it (sluice's own HTTP/1.1 server has sent a response of known
	// length by then), and the connection's next request always does.
	// Count things, do no I/O.
	Observe func(Summary)
}

// Handler is the reverse proxy. Build it with New; it is safe for
// concurrent use.
type Handler struct {
	pool         *upstream.Pool
	transport    http.RoundTripper
	retry        RetryPolicy
	budget       *retryBudget
	maxBuffer    int64
	flush        time.Duration
	trusted      []netip.Prefix
	headerUp     []HeaderRule
	headerDown   []HeaderRule
	upgrades     []string
	log          *slog.Logger
	access       *slog.Logger
	observer     func(Summary)
	tunnels      tunnels
	ownTransport *Transport // closed by Close when we made it
	// sluice is transport when it is a *Transport (ours or a caller's):
	// it is handed the 1xx relay directly instead of through a context.
	sluice *Transport
}

// New validates cfg, fills defaults and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Upstreams == nil {
		return nil, errors.New("proxy: Config.Upstreams is required")
	}
	h := &Handler{
		pool:       cfg.Upstreams,
		transport:  cfg.Transport,
		maxBuffer:  cfg.MaxRequestBuffer,
		flush:      cfg.FlushInterval,
		trusted:    cfg.TrustedProxies,
		headerUp:   cfg.HeaderUp,
		headerDown: cfg.HeaderDown,
		log:        cfg.Logger,
		access:     cfg.AccessLog,
		observer:   cfg.Observe,
	}
	if h.transport == nil {
		t := NewTransport(TransportOptions{})
		h.transport, h.ownTransport = t, t
	}
	h.sluice, _ = h.transport.(*Transport)
	if h.maxBuffer == 0 {
		h.maxBuffer = DefaultMaxRequestBuffer
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	retry, err := cfg.Retry.withDefaults()
	if err != nil {
		return nil, err
	}
	h.retry = retry
	h.budget = newRetryBudget(retry.BudgetRatio, retry.BudgetMinPerSecond)
	ups := cfg.Upgrades
	if ups == nil {
		ups = []string{"websocket"}
	}
	for _, u := range ups {
		if !validToken(u) {
			return nil, fmt.Errorf("proxy: upgrade token %q is not a valid HTTP token", u)
		}
		if strings.EqualFold(u, "h2c") {
			continue // h2c would turn the connection into a tunnel past routing
		}
		h.upgrades = append(h.upgrades, strings.ToLower(u))
	}
	for _, r := range append(append([]HeaderRule(nil), cfg.HeaderUp...), cfg.HeaderDown...) {
		if err := r.validate(); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Close tears down upgraded connections (WebSockets) still open and idle
// upstream connections of the default transport. Call it after the server
// has shut down; in-flight plain requests are not affected.
func (h *Handler) Close() error {
	h.tunnels.closeAll()
	if h.ownTransport != nil {
		h.ownTransport.CloseIdleConnections()
	}
	return nil
}

// Tunnels returns the number of upgraded connections currently open.
func (h *Handler) Tunnels() int { return h.tunnels.count() }

// ServeHTTP forwards r upstream and copies the answer to w.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := newRoundTrip(h, w, r)
	rt.run()
	rt.recycle() // not after a panic: finish passes it on
}

// bufPool holds the 32 KiB buffers used to copy bodies and tunnels.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

var _ io.Closer = (*Handler)(nil)
