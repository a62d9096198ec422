// Package server runs an http.Handler on a listener the way an operator
// wants it run: bounded header reads, HTTP/2 on TLS, optional h2c (prior
// knowledge only), and a graceful shutdown when the context ends.
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	err := server.Run(ctx, handler, server.Options{Addr: ":8080"})
//
// When the handler is an io.Closer (proxy.Handler is), Close is called after
// the server stopped, so upgraded connections (WebSockets), which net/http no
// longer tracks, are closed too.
//
// On plain-TCP listeners, common HTTP/1.1 requests are served by a loop of
// this package's own (h1serve.go), which hands every other connection to
// net/http's server; Options.StdHTTP1 turns it off.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/internal/sockio"
)

// Defaults used for zero Options fields.
const (
	// DefaultReadHeaderTimeout bounds how long a client may take to send
	// the request line and headers (slowloris).
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes caps the request line plus header block:
	// 64 KiB, far above what browsers send (a few KiB, cookies included)
	// and well below net/http's own 1 MiB. Larger blocks get 431.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultShutdownTimeout is how long in-flight requests may run on
	// after shutdown began; then their connections are closed.
	DefaultShutdownTimeout = 15 * time.Second
)

// Options say where and how to serve. Zero values mean the defaults above;
// a negative duration means "no limit".
type Options struct {
	// Addr is the listen address for Run, e.g. ":8080" or "127.0.0.1:0".
	Addr string
	// TLSCert and TLSKey are PEM files. When both are set the listener
	// speaks HTTPS, with HTTP/2 negotiated by ALPN and HTTP/1.1 as fallback.
	TLSCert, TLSKey string
	// H2C serves HTTP/2 over plain TCP to clients that start with the
	// HTTP/2 preface (prior knowledge). The "Upgrade: h2c" dance is never
	// honoured. Ignored with TLS.
	H2C bool
	// MaxHeaderBytes caps request line plus headers (DefaultMaxHeaderBytes).
	// net/http allows 4 KiB of slack above it before answering 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout: DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout and WriteTimeout bound the whole request and the whole
	// response. Default: none, because a proxy carries uploads, downloads
	// and streams of any length; slow clients are bounded by
	// ReadHeaderTimeout and IdleTimeout instead.
	ReadTimeout, WriteTimeout time.Duration
	// IdleTimeout: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// BodyReadTimeout is how long one read of a request body may wait for
	// the client's next bytes (slow POST); the upload as a whole is not
	// limited. DefaultBodyReadTimeout. See bodytimeout.go.
	BodyReadTimeout time.Duration
	// WriteIdleTimeout is how long one write of a response may stay blocked
	// on a client that does not read (slow read); the response as a whole
	// is not limited. Also HTTP/2's WriteByteTimeout.
	// DefaultWriteIdleTimeout. See writetimeout.go.
	WriteIdleTimeout time.Duration
	// ShutdownTimeout: DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// StdHTTP1 serves every HTTP/1 connection with net/http's server,
	// turning off the fast HTTP/1.1 loop (see h1serve.go). For comparison
	// and as an escape hatch; the loop is already off with TLS or a
	// ReadTimeout or WriteTimeout.
	StdHTTP1 bool
	// NoPeerYield keeps the fast HTTP/1.1 loop from yielding its CPU after
	// it sends a complete response while no other request waits for one
	// (sockio.YieldCPU says why it does).
	NoPeerYield bool
	// Logger receives the listening address, shutdown progress and
	// net/http's own errors. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		switch {
		case *d == 0:
			*d = v
		case *d < 0:
			*d = 0 // net/http: zero is no limit
		}
	}
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.ReadTimeout, 0)
	def(&o.WriteTimeout, 0)
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// TLS reports whether o asks for HTTPS.
func (o Options) TLS() bool { return o.TLSCert != "" || o.TLSKey != "" }

// Run listens on o.Addr and serves h until ctx ends; see Serve.
func Run(ctx context.Context, h http.Handler, o Options) error {
	tlsConf, err := o.tlsConfig()
	if err != nil {
		return err
	}
	ln, err := Listen(o.Addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln, h, o, tlsConf)
}

// Listen opens a TCP listener on addr. When the address is taken the error
// says so in words (it wraps syscall.EADDRINUSE).
func Listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		if IsAddrInUse(err) {
			return nil, fmt.Errorf("listen on %s: address already in use (another program, or another sluice, is listening there): %w", addr, err)
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish for up to o.ShutdownTimeout,
// closes the connections still open after that, and finally calls h.Close
// when h is an io.Closer. It returns nil after a shutdown caused by ctx, or
// the error that stopped serving. ln is closed either way; o.Addr is ignored.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, o Options) error {
	tlsConf, err := o.tlsConfig()
	if err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, ln, h, o, tlsConf)
}

func (o Options) tlsConfig() (*tls.Config, error) {
	if !o.TLS() {
		return nil, nil
	}
	if o.TLSCert == "" || o.TLSKey == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s and key %s: %w", o.TLSCert, o.TLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func serve(ctx context.Context, ln net.Listener, h http.Handler, o Options, tlsConf *tls.Config) error {
	o = o.withDefaults()
	log := o.Logger
	ln = sockio.Listener(ln)

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true) // used on TLS connections only
	if o.H2C && tlsConf == nil {
		// Prior knowledge only: net/http never performs "Upgrade: h2c",
		// and the proxy never forwards that token.
		protos.SetUnencryptedHTTP2(true)
	}
	guarded := newSmugglingGuard(clientTimeouts(h, o), log)
	srv := &http.Server{
		Handler:           h2Stack{guarded},
		HTTP2:             http2Config(o),
		TLSConfig:         tlsConf,
		Protocols:         &protos,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          newErrorLog(log),
	}
	if tlsConf != nil {
		srv.ConnState = switchOnForH2
	}

	scheme, alpn := "http", "http/1.1"
	switch {
	case tlsConf != nil:
		scheme, alpn = "https", "h2,http/1.1"
	case protos.UnencryptedHTTP2():
		alpn = "http/1.1,h2c"
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "protocols", alpn)

	var fast *h1server
	if useFastLoop(o, tlsConf != nil) {
		fast = newH1Server(guarded, o, srv, ln.Addr())
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		switch {
		case fast != nil:
			go srv.Serve(fast.handoff) // ends with ErrServerClosed at shutdown
			err = fast.acceptLoop(ln)
			if err == nil {
				err = http.ErrServerClosed
			}
		case tlsConf != nil:
			err = srv.ServeTLS(coalescingListener{ln, o.writeIdleTimeout()}, "", "")
		default:
			err = srv.Serve(ln)
		}
		errc <- err
	}()

	select {
	case err := <-errc:
		// Serving stopped on its own: the listener broke.
		srv.Close()
		if fast != nil {
			fast.beginShutdown()
			fast.closeAll()
		}
		closeHandler(h, log)
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	log.Info("shutting down", "addr", ln.Addr().String(), "grace", o.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	if fast != nil {
		fast.beginShutdown()
		ln.Close()
	}
	err := srv.Shutdown(sctx)
	if fast != nil && err == nil {
		err = fast.waitIdle(sctx)
	}
	if err != nil {
		log.Warn("requests still running after the shutdown grace period; closing their connections",
			"grace", o.ShutdownTimeout.String(), "error", err.Error())
		srv.Close()
		if fast != nil {
			fast.closeAll()
		}
	}
	<-errc // http.ErrServerClosed
	closeHandler(h, log)
	log.Info("stopped", "addr", ln.Addr().String())
	return nil
}

func closeHandler(h http.Handler, log *slog.Logger) {
	if c, ok := h.(io.Closer); ok {
		if err := c.Close(); err != nil {
			log.Warn("closing handler", "error", err.Error())
		}
	}
}

// IsAddrInUse reports whether err says the listen address is taken.
func IsAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

// newErrorLog routes net/http's own messages to slog: TLS handshake
// failures (scanners, expired client trust stores) at debug, the rest at
// warn.
func newErrorLog(l *slog.Logger) *log.Logger {
	return log.New(errorLogWriter{l}, "", 0)
}

type errorLogWriter struct{ l *slog.Logger }

func (w errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(bytes.TrimPrefix(p, []byte("http: "))))
	lvl := slog.LevelWarn
	if strings.Contains(msg, "TLS handshake error") {
		lvl = slog.LevelDebug
	}
	w.l.Log(context.Background(), lvl, "http server", "error", msg)
	return len(p), nil
}
