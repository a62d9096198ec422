package proxy

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/upstream"
)

// copyResponse streams the upstream body to the client with our own loop, so
// a read error (the upstream broke: logged as an error, counted against it)
// is told apart from a write error (the client left: debug, not counted).
// Either way the client stream is aborted afterwards, so a truncated body
// never looks complete.
func (rt *roundTrip) copyResponse(res *http.Response) upstream.OutcomeKind {
	interval := rt.flushPolicy(res)
	var rc *http.ResponseController
	if interval != 0 {
		rc = http.NewResponseController(rt.w)
	}
	var dst io.Writer = rt.w
	var lw *latencyWriter
	if interval > 0 {
		lw = &latencyWriter{w: rt.w, rc: rc, d: interval}
		dst = lw
		defer lw.stop()
	}

	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			rt.written += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr == nil && interval < 0 {
				werr = rc.Flush()
			}
			if werr != nil {
				rt.clientGone(werr)
				rt.abort = true
				return upstream.Ignored
			}
		}
		if rerr == io.EOF {
			return upstream.Success
		}
		if rerr != nil {
			if rt.in.Context().Err() != nil {
				// Our side cancelled the upstream read because the client
				// left; not the upstream's fault.
				rt.clientGone(rerr)
				rt.abort = true
				return upstream.Ignored
			}
			rt.err = rerr
			rt.abort = true
			rt.h.log.LogAttrs(rt.in.Context(), slogError, "upstream response body broke",
				attrStr("uri", rt.in.RequestURI), attrStr("upstream", upstreamAddr(rt.up)),
				attrInt("written", int(rt.written)), attrErr(rerr))
			return upstream.Failure
		}
	}
}

// latencyWriter flushes at most d after a write, so a slow trickle still
// reaches the client in time without a flush per write.
type latencyWriter struct {
	mu      sync.Mutex
	w       io.Writer
	rc      *http.ResponseController
	d       time.Duration
	t       *time.Timer
	pending bool
	stopped bool
}

func (l *latencyWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	if l.pending || l.stopped {
		return n, err
	}
	l.pending = true
	if l.t == nil {
		l.t = time.AfterFunc(l.d, l.delayedFlush)
	} else {
		l.t.Reset(l.d)
	}
	return n, err
}

func (l *latencyWriter) delayedFlush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || !l.pending {
		return
	}
	_ = l.rc.Flush()
	l.pending = false
}

func (l *latencyWriter) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.t != nil {
		l.t.Stop()
	}
}
