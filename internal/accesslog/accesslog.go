// Package accesslog writes one JSON line per request from a proxy.Summary.
//
// It exists for speed: the same line through log/slog costs a stack walk
// for the caller's PC, an attribute slice and a generic encoder on every
// request (about a tenth of a small GET's CPU in a profile). The encoder here
// appends straight into a pooled buffer and allocates nothing. The fields
// and their JSON types are those slog's JSON handler gives the proxy's own
// Config.AccessLog line, so either produces the same log.
package accesslog

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sluiceproxy/sluice/proxy"
)

// Logger writes access lines to w. Each line is one Write call, so a
// batching writer never splits a line. Safe for concurrent use.
type Logger struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New returns a Logger writing to w.
func New(w io.Writer) *Logger { return &Logger{w: w, now: time.Now} }

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log writes the line for s. It fits proxy.Config.Observe. A failed write
// is dropped: the request it describes is already answered.
func (l *Logger) Log(s proxy.Summary) {
	bp := linePool.Get().(*[]byte)
	b := AppendLine((*bp)[:0], l.now(), &s)
	l.mu.Lock()
	_, _ = l.w.Write(b)
	l.mu.Unlock()
	if cap(b) <= 16<<10 { // a huge URI must not pin a huge buffer
		*bp = b
		linePool.Put(bp)
	}
}

// AppendLine appends the JSON line for s, logged at t, and a newline.
func AppendLine(b []byte, t time.Time, s *proxy.Summary) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, t)
	b = append(b, `","level":"INFO","msg":"access","method":`...)
	b = appendString(b, s.Method)
	b = append(b, `,"uri":`...)
	b = appendString(b, s.URI)
	b = append(b, `,"proto":`...)
	b = appendString(b, s.Proto)
	b = append(b, `,"remote":`...)
	b = appendString(b, s.Remote)
	b = append(b, `,"host":`...)
	b = appendString(b, s.Host)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(s.Status), 10)
	b = append(b, `,"upstream":`...)
	b = appendString(b, s.Upstream)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(s.Attempts), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, s.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, s.BytesOut, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(s.Duration), 10)
	b = append(b, `,"upstream_latency":`...)
	b = strconv.AppendInt(b, int64(s.UpstreamLatency), 10)
	if s.Err != nil {
		b = append(b, `,"error":`...)
		b = appendString(b, s.Err.Error())
	}
	return append(b, "}\n"...)
}

// stamp is the formatted second, and zone, of the last line's time:
// lines in the same second reuse them, which saves most of AppendFormat.
type stamp struct {
	sec          int64
	loc          *time.Location
	second, zone []byte
}

var lastStamp atomic.Pointer[stamp]

// appendTime appends t as time.RFC3339 with milliseconds, like
// t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00").
func appendTime(b []byte, t time.Time) []byte {
	sec := t.Unix()
	st := lastStamp.Load()
	if st == nil || st.sec != sec || st.loc != t.Location() {
		st = &stamp{sec: sec, loc: t.Location(),
			second: t.AppendFormat(nil, "2006-01-02T15:04:05"),
			zone:   t.AppendFormat(nil, "Z07:00")}
		lastStamp.Store(st)
	}
	b = append(b, st.second...)
	ms := t.Nanosecond() / 1e6
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, st.zone...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Control characters, quotes and
// backslashes are escaped, invalid UTF-8 becomes U+FFFD, and <, > and & are
// escaped as slog and encoding/json do, so a log viewer that renders HTML
// is not handed markup from a request line.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON, but not valid JavaScript string content.
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
