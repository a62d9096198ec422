package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/accesslog"
	"github.com/sluiceproxy/sluice/internal/admin"
	"github.com/sluiceproxy/sluice/internal/gcfloor"
	"github.com/sluiceproxy/sluice/internal/server"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// env is what a command may touch of the outside world.
type env struct {
	stdout, stderr io.Writer
	// ready, when set, is called with the listening address once the
	// listener is open (tests listen on 127.0.0.1:0).
	ready func(net.Addr)
	// adminReady, when set, is called with the admin endpoint's address
	// (--admin) once it listens, before ready.
	adminReady func(net.Addr)
}

// runProxy serves `sluice proxy` until ctx ends.
func runProxy(ctx context.Context, o proxyOptions, e env) error {
	log := newLogger(e.stderr, o.LogFormat, o.LogLevel)
	defer gcfloor.Start(uint64(o.GCFloor)).Stop()
	var access func(proxy.Summary)
	if o.AccessLog != "" {
		w := e.stdout
		if o.AccessLog != "-" {
			f, err := os.OpenFile(o.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				return fmt.Errorf("--access-log: %w", err)
			}
			defer f.Close()
			w = f
		}
		w = &failureReporter{w: w, log: log}
		if o.AccessLogBuffer > 0 {
			bl := newBufferedLog(w, int(o.AccessLogBuffer))
			defer bl.Close() // before the file closes: defers run last-in first-out
			w = bl
		}
		// The same JSON line as slog's handler would write for
		// Config.AccessLog, at a quarter of the cost (internal/accesslog).
		access = accesslog.New(w).Log
	}
	cfg, tr, err := o.toConfig(log, access)
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	defer cfg.Upstreams.Close() // stops health checkers
	var metrics *admin.Metrics
	if o.Admin != "" {
		// Only with --admin: without it no request pays for counting.
		metrics = admin.NewMetrics()
		cfg.Observe = chainObserve(cfg.Observe, metrics.Observe)
	}
	h, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	ln, err := server.Listen(o.From)
	if err != nil {
		h.Close()
		return err
	}
	if o.Admin != "" {
		stopAdmin, err := startAdmin(ctx, o.Admin, cfg.Upstreams, metrics, log, e.adminReady)
		if err != nil {
			ln.Close()
			h.Close()
			return err
		}
		// After the proxy: metrics stay readable while requests drain.
		defer stopAdmin()
	}
	if e.ready != nil {
		e.ready(ln.Addr())
	}
	log.Info("proxying", "to", o.targetList(), "lb_policy", o.LBPolicy)
	return server.Serve(ctx, ln, h, o.serverOptions(log))
}

// chainObserve returns an observer calling first (when set), then next.
func chainObserve(first, next func(proxy.Summary)) func(proxy.Summary) {
	if first == nil {
		return next
	}
	return func(s proxy.Summary) {
		first(s)
		next(s)
	}
}

// startAdmin serves the admin endpoint (--admin) on addr. It keeps serving
// after ctx ends, so the proxy's shutdown can be watched; stop ends it and
// waits until it has.
func startAdmin(ctx context.Context, addr string, pool *upstream.Pool, m *admin.Metrics,
	log *slog.Logger, ready func(net.Addr)) (stop func(), err error) {
	a, err := admin.New(pool, m)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if server.IsAddrInUse(err) {
			return nil, fmt.Errorf("--admin %s: listen: address already in use (another program, or another sluice, is listening there)", addr)
		}
		return nil, fmt.Errorf("--admin %s: listen: %w", addr, err)
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := admin.Serve(actx, ln, a, log); err != nil {
			log.Error("admin endpoint stopped", "error", err.Error())
		}
	}()
	log.Info("admin endpoint", "addr", ln.Addr().String(), "paths", "/metrics /status")
	if ready != nil {
		ready(ln.Addr())
	}
	return func() { cancel(); <-done }, nil
}

// idleCloser is the part of the transport the command uses after serving.
type idleCloser interface{ CloseIdleConnections() }

// toConfig maps the command line to the library's configuration. The
// transport is returned so the caller can close its idle connections
// (proxy.Handler.Close only does that for a transport it made itself).
func (o proxyOptions) toConfig(log *slog.Logger, access func(proxy.Summary)) (proxy.Config, idleCloser, error) {
	policy, err := newPolicy(o.LBPolicy)
	if err != nil {
		return proxy.Config{}, nil, &usageError{"proxy", fmt.Sprintf("--lb-policy %q: %v", o.LBPolicy, err)}
	}
	ups := make([]*upstream.Upstream, len(o.To))
	for i, t := range o.To {
		ups[i] = upstream.New(t.Addr)
		ups[i].Scheme = t.Scheme
		ups[i].MaxRequests = o.MaxRequests
	}
	rht := o.ResponseHeaderTimeout
	if rht == 0 {
		rht = -1 // none, in the library's terms
	}
	tr := proxy.NewTransport(proxy.TransportOptions{
		DialTimeout:           o.DialTimeout,
		ResponseHeaderTimeout: rht,
		NoPeerYield:           !o.PeerYield,
	})
	pc := upstream.PoolConfig{
		Policy:       policy,
		Upstreams:    ups,
		SlowStart:    o.SlowStart,
		QueueTimeout: o.QueueTimeout,
	}
	if o.HealthURI != "" {
		status, _ := upstream.ParseStatuses(strings.Split(o.HealthStatus, ",")...) // checked by the flag
		pc.Active = &upstream.ActiveHealth{
			Path:         o.HealthURI,
			Interval:     o.HealthInterval,
			Timeout:      o.HealthTimeout,
			ExpectStatus: status,
			Transport:    tr, // checks see the same dial and TLS settings as traffic
		}
	}
	if o.MaxFails > 0 {
		pc.Passive = &upstream.PassiveHealth{
			MaxFails:     o.MaxFails,
			FailWindow:   o.FailDuration,
			FailDuration: o.FailDuration,
		}
	}
	pool, err := upstream.NewPoolWith(pc)
	if err != nil {
		return proxy.Config{}, nil, &usageError{"proxy", err.Error()}
	}
	cfg := proxy.Config{
		Upstreams:        pool,
		Transport:        tr,
		Retry:            proxy.RetryPolicy{Retries: o.Retries, TryDuration: o.TryDuration, Statuses: o.RetryStatuses},
		MaxRequestBuffer: o.MaxRequestBuffer,
		FlushInterval:    o.FlushInterval,
		TrustedProxies:   o.TrustedProxies,
		HeaderUp:         o.HeaderUp,
		HeaderDown:       o.HeaderDown,
		Logger:           log,
		Observe:          access,
	}
	// The library reads zero as "default"; on the command line zero means
	// none.
	if o.Retries == 0 {
		cfg.Retry.Retries = -1
	}
	if o.MaxRequestBuffer == 0 {
		cfg.MaxRequestBuffer = -1
	}
	return cfg, tr, nil
}

func (o proxyOptions) serverOptions(log *slog.Logger) server.Options {
	return server.Options{
		TLSCert:          o.TLSCert,
		TLSKey:           o.TLSKey,
		H2C:              o.H2C,
		StdHTTP1:         o.StdHTTP1,
		NoPeerYield:      !o.PeerYield,
		MaxHeaderBytes:   o.MaxHeaderBytes,
		BodyReadTimeout:  noneIfZero(o.BodyReadTimeout),
		WriteIdleTimeout: noneIfZero(o.WriteIdleTimeout),
		Logger:           log,
	}
}

// noneIfZero maps the command line's "0 = no limit" to the library's
// negative value (its zero means the default).
func noneIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func (o proxyOptions) targetList() string {
	s := make([]string, len(o.To))
	for i, t := range o.To {
		s[i] = t.Scheme + "://" + t.Addr
	}
	return strings.Join(s, " ")
}

// newLogger returns the process logger: text or JSON on w.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	ho := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}
