package proxy

import (
	"context"
	"log/slog"
	"time"
)

const (
	slogDebug = slog.LevelDebug
	slogWarn  = slog.LevelWarn
	slogError = slog.LevelError
)

func attrStr(k, v string) slog.Attr     { return slog.String(k, v) }
func attrInt(k string, v int) slog.Attr { return slog.Int(k, v) }
func attrErr(err error) slog.Attr {
	if err == nil {
		return slog.String("error", "")
	}
	return slog.String("error", err.Error())
}

// logAccess writes one line per request: what the client asked, what it got,
// where it went and how long it took.
func (rt *roundTrip) logAccess() {
	l := rt.h.access
	if l == nil || !l.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("method", rt.in.Method),
		slog.String("uri", rt.in.RequestURI),
		slog.String("proto", rt.in.Proto),
		slog.String("remote", rt.in.RemoteAddr),
		slog.String("host", rt.in.Host),
		slog.Int("status", rt.status),
		slog.String("upstream", upstreamAddr(rt.up)),
		slog.Int("attempts", rt.attempts),
		slog.Int64("bytes_in", rt.body.bytesRead()+rt.upBytes),
		slog.Int64("bytes_out", rt.written),
		slog.Duration("duration", time.Since(rt.start)),
		slog.Duration("upstream_latency", rt.ttfb),
	}
	n := len(attrs)
	if rt.err != nil {
		l.LogAttrs(context.Background(), slog.LevelInfo, "access", append(attrs[:n:n], attrErr(rt.err))...)
		return
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs[:]...)
}
