package proxy

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/upstream"
)

// respond writes the upstream's response to the client.
func (rt *roundTrip) respond(res *http.Response) {
	if res.StatusCode == http.StatusSwitchingProtocols {
		rt.switchProtocols(res)
		return
	}
	h := rt.h
	removeHopByHop(res.Header)
	applyHeaderRules(res.Header, h.headerDown)

	dst := rt.w.Header()
	for k, vv := range res.Header {
		if prior, ok := dst[k]; ok {
			dst[k] = append(prior, vv...)
		} else {
			dst[k] = vv
		}
	}
	if n := len(res.Trailer); n > 0 {
		keys := make([]string, 0, n)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	rt.status = res.StatusCode
	rt.w.WriteHeader(res.StatusCode)
	announced := len(res.Trailer)
	if announced > 0 || res.ContentLength == -1 && bodyAllowed(rt.in.Method, res.StatusCode) {
		// Send the headers now: a stream's client sees them before the
		// first event, and net/http cannot compute a Content-Length for a
		// short body, which would leave no room for trailers (announced or
		// not, we only learn of the latter at the end).
		_ = http.NewResponseController(rt.w).Flush()
	}

	outcome := rt.copyResponse(res)
	res.Body.Close()
	if outcome == upstream.Success {
		rt.copyResponseTrailers(res.Trailer, announced)
	}
	rt.releaseHeld(outcome, res.StatusCode)
}

func (rt *roundTrip) releaseHeld(kind upstream.OutcomeKind, status int) {
	if rt.held != nil {
		rt.h.pool.Release(rt.held, upstream.Outcome{Kind: kind, Status: status, Latency: rt.ttfb})
		rt.held = nil
	}
}

func bodyAllowed(method string, status int) bool {
	return method != http.MethodHead && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// copyResponseTrailers sets the trailers after the body: announced ones
// under their name, others with the TrailerPrefix so net/http still sends
// them.
func (rt *roundTrip) copyResponseTrailers(tr http.Header, announced int) {
	if len(tr) == 0 {
		return
	}
	dst := rt.w.Header()
	if len(tr) == announced {
		for k, vv := range tr {
			dst[k] = vv
		}
		return
	}
	for k, vv := range tr {
		dst[http.TrailerPrefix+k] = vv
	}
}

// flushPolicy returns the flush interval for res: streams and responses of
// unknown length are flushed after every write.
func (rt *roundTrip) flushPolicy(res *http.Response) time.Duration {
	if res.ContentLength == -1 {
		return -1
	}
	if isEventStream(res.Header.Get("Content-Type")) {
		return -1
	}
	return rt.h.flush
}

// isEventStream reports whether a Content-Type is text/event-stream, with or
// without parameters (cheaper than mime.ParseMediaType on every response).
func isEventStream(ct string) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	rest := strings.TrimLeft(ct[len(es):], " \t")
	return rest == "" || rest[0] == ';'
}

// fail answers the client when no upstream response could be had.
func (rt *roundTrip) fail(f failure, err error) {
	rt.status = statusFor(f)
	rt.err = err
	lvl := slogError
	if f == failNoUpstream {
		lvl = slogWarn
	}
	rt.h.log.LogAttrs(rt.in.Context(), lvl, "upstream request failed",
		attrStr("method", rt.in.Method), attrStr("uri", rt.in.RequestURI),
		attrStr("upstream", upstreamAddr(rt.up)), attrInt("attempts", rt.attempts),
		attrInt("status", rt.status), attrErr(err))
	rt.writeError(rt.status)
}

func (rt *roundTrip) writeError(status int) {
	hdr := rt.w.Header()
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	rt.w.WriteHeader(status)
	_, _ = rt.w.Write([]byte(http.StatusText(status) + "\n"))
}

// clientGone records that the client left before the answer was complete.
func (rt *roundTrip) clientGone(err error) {
	rt.status = StatusClientClosedRequest
	rt.err = err
	// Abort rather than return: with nothing written, net/http would
	// answer an implicit 200 on a connection whose request body broke.
	rt.abort = true
	rt.h.log.LogAttrs(rt.in.Context(), slogDebug, "client went away",
		attrStr("uri", rt.in.RequestURI), attrErr(err))
}

// badBody answers when the client's body could not be read.
func (rt *roundTrip) badBody(err error) {
	rt.err = err
	switch {
	case errors.Is(err, errBodyTooLarge):
		rt.status = http.StatusRequestEntityTooLarge
		rt.writeError(rt.status)
	case isTimeout(err):
		// Checked before the context: on HTTP/1 a failed body read
		// cancels it, but a slow client is still there to be told.
		rt.status = http.StatusRequestTimeout
		rt.w.Header().Set("Connection", "close") // the body's framing is lost
		rt.writeError(rt.status)
	case rt.in.Context().Err() != nil:
		rt.clientGone(err)
	default:
		rt.status = http.StatusBadRequest
		rt.h.log.LogAttrs(rt.in.Context(), slogDebug, "reading request body", attrErr(err))
		rt.w.Header().Set("Connection", "close") // the body's framing is lost
		rt.writeError(rt.status)
	}
}

func upstreamAddr(u *upstream.Upstream) string {
	if u == nil {
		return ""
	}
	return u.Addr
}
