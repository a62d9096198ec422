package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// proxyLog receives the proxy's logs and access log and keeps what the
// report needs: status and attempt counts, the failed requests by id (for
// evidence), and retries the policy allowed but did not happen.
type proxyLog struct {
	retries     int
	tryDuration time.Duration
	logf        func(format string, args ...any) // verbose; may be nil

	mu       sync.Mutex
	msgs     map[string]int64 // "LEVEL message" of the error log
	status   map[int]int64
	attempts [6]int64 // attempts 1..5, then 6 and more
	denied   int64    // failed with a retryable error, attempts left
	deniedBy map[string]int64
	failed   map[uint64]string // request id -> access record, bounded
}

const maxFailedRecords = 2000 // the early ones: report samples come from them

func newProxyLog(retries int, tryDuration time.Duration) *proxyLog {
	return &proxyLog{
		retries: retries, tryDuration: tryDuration,
		msgs: make(map[string]int64), status: make(map[int]int64),
		deniedBy: make(map[string]int64), failed: make(map[uint64]string),
	}
}

func (l *proxyLog) errorLogger() *slog.Logger  { return slog.New(&logHandler{l: l}) }
func (l *proxyLog) accessLogger() *slog.Logger { return slog.New(&logHandler{l: l, access: true}) }

func (l *proxyLog) failedRecords() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.failed)
}

func (l *proxyLog) deniedCount() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.denied
}

// failure returns the proxy's access record for request id, if it failed.
func (l *proxyLog) failure(id uint64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed[id]
}

type logHandler struct {
	l      *proxyLog
	access bool
	attrs  []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, lvl slog.Level) bool {
	return h.access || lvl >= slog.LevelWarn
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{l: h.l, access: h.access, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := make(map[string]slog.Value, 16)
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value
	}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value
		return true
	})
	if h.access {
		h.l.access(attrs)
		return nil
	}
	key := r.Level.String() + " " + r.Message
	h.l.mu.Lock()
	h.l.msgs[key]++
	h.l.mu.Unlock()
	if h.l.logf != nil {
		h.l.logf("proxy log: %s %s", key, formatAttrs(attrs))
	}
	return nil
}

func (l *proxyLog) access(a map[string]slog.Value) {
	status := int(valInt(a["status"]))
	attempts := int(valInt(a["attempts"]))
	errStr := ""
	if v, ok := a["error"]; ok {
		errStr = v.String()
	}
	method := a["method"].String()
	var dur time.Duration
	if v := a["duration"]; v.Kind() == slog.KindDuration {
		dur = v.Duration()
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.status[status]++
	l.attempts[min(max(attempts, 1), len(l.attempts))-1]++
	if status < 500 && errStr == "" {
		return
	}
	// A failure the retry rules allowed to retry (every failure of a GET;
	// a dial failure of anything) that stopped with attempts left and
	// time left: the retry budget said no.
	retryable := method != "POST" || strings.HasPrefix(errStr, "dial ")
	if status >= 502 && status <= 504 && retryable && attempts <= l.retries && dur < l.tryDuration {
		l.denied++
		l.deniedBy[fmt.Sprintf("%s attempts=%d", method, attempts)]++
	}
	if len(l.failed) < maxFailedRecords {
		if id := uriID(a["uri"].String()); id != 0 {
			l.failed[id] = fmt.Sprintf("proxy: status=%d attempts=%d upstream=%s duration=%v error=%q",
				status, attempts, a["upstream"].String(), dur.Round(time.Millisecond), errStr)
		}
	}
}

func valInt(v slog.Value) int64 {
	if v.Kind() == slog.KindInt64 {
		return v.Int64()
	}
	return 0
}

// uriID extracts id=N from a request URI.
func uriID(uri string) uint64 {
	i := strings.Index(uri, "id=")
	if i < 0 {
		return 0
	}
	s := uri[i+3:]
	if j := strings.IndexByte(s, '&'); j >= 0 {
		s = s[:j]
	}
	id, _ := strconv.ParseUint(s, 10, 64)
	return id
}

func formatAttrs(a map[string]slog.Value) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, a[k].String())
	}
	return b.String()
}

func (l *proxyLog) writeSummary(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	codes := make([]int, 0, len(l.status))
	for c := range l.status {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", c, l.status[c]))
	}
	fmt.Fprintf(w, "  access log statuses: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(w, "  attempts per request: 1×%d 2×%d 3×%d 4×%d 5×%d 6+×%d\n",
		l.attempts[0], l.attempts[1], l.attempts[2], l.attempts[3], l.attempts[4], l.attempts[5])
	fmt.Fprintf(w, "  retryable failures that stopped with attempts and time left (retry budget): %d", l.denied)
	if len(l.deniedBy) > 0 {
		keys := make([]string, 0, len(l.deniedBy))
		for k := range l.deniedBy {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var ps []string
		for _, k := range keys {
			ps = append(ps, fmt.Sprintf("%s: %d", k, l.deniedBy[k]))
		}
		fmt.Fprintf(w, " (%s)", strings.Join(ps, ", "))
	}
	fmt.Fprintln(w)
	keys := make([]string, 0, len(l.msgs))
	for k := range l.msgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  proxy log %q: %d\n", k, l.msgs[k])
	}
}

// lineCounter is an io.Writer for a log.Logger (one Write per line) that
// counts lines and keeps the first few.
type lineCounter struct {
	name string
	logf func(format string, args ...any)

	mu     sync.Mutex
	n      int64
	panics int64
	first  []string
}

func (c *lineCounter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	c.mu.Lock()
	c.n++
	if strings.Contains(line, "panic") {
		c.panics++
	}
	if len(c.first) < 5 {
		c.first = append(c.first, line)
	}
	c.mu.Unlock()
	if c.logf != nil {
		c.logf("%s: %s", c.name, line)
	}
	return len(p), nil
}

func (c *lineCounter) snapshot() (n, panics int64, first []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.panics, append([]string(nil), c.first...)
}
