package server

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// DefaultWriteIdleTimeout is how long one write of a response may stay
// blocked because the client does not read (slow read), like nginx's
// send_timeout. It bounds the stalls, not the response: a long download or
// a quiet event stream is never cut off while the client keeps reading.
const DefaultWriteIdleTimeout = 60 * time.Second

func (o Options) writeIdleTimeout() time.Duration {
	return orDefault(o.WriteIdleTimeout, DefaultWriteIdleTimeout)
}

// watchedWriter arms the write watchdog (when WriteIdleTimeout is on)
// around every call that may write to the client: Write, WriteHeader (1xx
// go out at once) and Flush, and notes whether a response was started.
// Other ResponseController features reach the wrapped writer through
// Unwrap.
type watchedWriter struct {
	http.ResponseWriter
	g *reqWatch
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.g.wrote = true
	w.g.beginWrite()
	n, err := w.ResponseWriter.Write(p)
	w.g.endWrite(err)
	return n, err
}

func (w *watchedWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.g.wrote = true
	}
	w.g.beginWrite()
	w.ResponseWriter.WriteHeader(code)
	w.g.endWrite(nil)
}

// Flush keeps http.Flusher working for callers that type-assert it.
func (w *watchedWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls, so the caller
// learns that the flush failed.
func (w *watchedWriter) FlushError() error {
	w.g.wrote = true // a flush sends the header, 200 if none was set
	w.g.beginWrite()
	err := http.NewResponseController(w.ResponseWriter).Flush()
	w.g.endWrite(err)
	return err
}

func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// watchedHijacker is watchedWriter for HTTP/1 responses, which can be
// hijacked (upgrades). It is a separate type so that an HTTP/2 response does
// not claim to be an http.Hijacker.
type watchedHijacker struct{ watchedWriter }

// Hijack hands the connection over; from then on the watchdogs keep their
// hands off it (net/http clears its deadlines).
func (w *watchedHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.g.mu.Lock() // after any cut-off in progress
	w.g.hijacked.Store(true)
	w.g.mu.Unlock()
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		w.g.hijacked.Store(false)
	}
	return c, brw, err
}
