package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/server"
)

// frontIsNetHTTP: SLUICE_TEST_STDSERVER=1 puts net/http's server in front.
var frontIsNetHTTP = os.Getenv("SLUICE_TEST_STDSERVER") != ""

// frontServer serves h as sluice does: through internal/server, whose fast
// HTTP/1.1 loop (and net/http's server, for what the loop hands over) are
// then covered by every proxy test. SLUICE_TEST_STDSERVER=1 uses a plain
// httptest server (net/http's server alone) instead.
//
// The result is an httptest.Server that was never started: its URL,
// Listener and Config.Handler are set, and Close closes the listener, which
// stops the serving goroutine; t's cleanup waits for it.
func frontServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	if frontIsNetHTTP {
		return httptest.NewServer(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.URL = "http://" + srv.Listener.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = server.Serve(ctx, srv.Listener, h, server.Options{
			Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
			ShutdownTimeout: 5 * time.Second,
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return srv
}
