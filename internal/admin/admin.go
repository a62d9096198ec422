// Package admin is sluice's admin endpoint: Prometheus metrics and the
// upstream pool's state, served on a listener of its own.
//
//	m := admin.NewMetrics()
//	h, _ := proxy.New(proxy.Config{Upstreams: pool, Observe: m.Observe})
//	a, _ := admin.New(pool, m)
//	go admin.Serve(ctx, adminListener, a, logger)
//
// GET /metrics is the Prometheus text format (metrics.go, pool.go and the Go
// runtime and process collectors); GET /status is the pool's Status as JSON.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluiceproxy/sluice/upstream"
)

// Admin is the admin endpoint's http.Handler.
type Admin struct {
	pool    *upstream.Pool
	reg     *prometheus.Registry
	metrics http.Handler
}

// New returns the admin endpoint of a proxy over pool whose requests m
// observes. Either may be nil: without m there are no request series,
// without pool no upstream state. The series live in a registry of their
// own, never Prometheus's global one.
func New(pool *upstream.Pool, m *Metrics) (*Admin, error) {
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if m != nil {
		cs = append(cs, m)
	}
	if pool != nil {
		cs = append(cs, NewPoolCollector(pool))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("admin: registering metrics: %w", err)
		}
	}
	a := &Admin{pool: pool, reg: reg}
	a.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A failing collector leaves its series out; the rest are served.
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes are cheap, but not free: a few at a time is plenty;
		// more get 503.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	return a, nil
}

// Registry is where the series live; a program embedding sluice may add
// its own collectors.
func (a *Admin) Registry() *prometheus.Registry { return a.reg }

// ServeHTTP serves GET (and HEAD) /metrics and /status; other paths are
// 404, other methods 405.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h http.HandlerFunc
	switch r.URL.Path {
	case "/metrics":
		h = a.metrics.ServeHTTP
	case "/status":
		h = a.status
	default:
		http.Error(w, "404 not found: the admin endpoint serves /metrics and /status", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	h(w, r)
}

// status writes the pool's state as JSON.
func (a *Admin) status(w http.ResponseWriter, _ *http.Request) {
	if a.pool == nil {
		http.Error(w, "404 not found: no upstream pool", http.StatusNotFound)
		return
	}
	b, err := json.MarshalIndent(a.pool.Status(), "", "  ")
	if err != nil {
		http.Error(w, "500 internal server error: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// ShutdownTimeout is how long Serve lets scrapes in progress finish once
// its context ends.
const ShutdownTimeout = 5 * time.Second

// Serve serves h on ln until ctx ends, then shuts down (waiting up to
// ShutdownTimeout for requests in progress). It returns nil after a
// shutdown caused by ctx, or the error that stopped serving. ln is closed
// either way. log receives net/http's own errors; nil means slog.Default().
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
