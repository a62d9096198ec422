package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type kind int

const (
	kGet    kind = iota // small GET, Content-Length or chunked
	kSSE                // server-sent events stream
	kWS                 // WebSocket echo
	kPost               // 1 MiB upload (-upload-size), not idempotent
	kPost64             // upload of 1-64 KiB: the proxy's synchronous HTTP/1.1 path
	nKinds
)

var kindNames = [nKinds]string{"GET", "SSE", "WS", "POST", "POST64"}

// allKinds and idempotentKinds list kinds for sums.
var (
	allKinds        = []kind{kGet, kSSE, kWS, kPost, kPost64}
	idempotentKinds = []kind{kGet, kSSE, kWS}
)

// outcome classifies one client request.
type outcome int

const (
	// oOK: complete and verified (hash, length, every event or echo).
	oOK outcome = iota
	// oVisible: the client saw an error, and chaos had broken this very
	// response after the upstream sent its headers. Allowed.
	oVisible
	// oStatus: the proxy answered with an error status (502, 503, 504...)
	// instead of the upstream's response. For idempotent requests this is
	// a failure retries should have prevented; for uploads it is allowed.
	oStatus
	// oUnexplained: the client saw an error (reset, EOF, timeout) although
	// chaos never broke this response after headers.
	oUnexplained
	// oSilent: the response ended cleanly but was short or wrong.
	// Truncation without an error: never allowed.
	oSilent
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"ok", "failed-visibly", "error-status", "unexplained-error", "failed-silently"}

const maxSamples = 6

type stats struct {
	counts  [nKinds][nOutcomes]atomic.Int64
	latency [nKinds]histogram

	mu       sync.Mutex
	samples  [nKinds][nOutcomes][]sample
	statuses [nKinds]map[int]int64
	logf     func(format string, args ...any) // verbose; may be nil

	// Uploads that failed at the client although an upstream received
	// the whole body (the answer was lost: allowed, but worth knowing).
	postAnswerLost atomic.Int64
	// Uploads answered 200 that no upstream recorded: impossible unless
	// the harness or the proxy is broken.
	postOKUnrecorded atomic.Int64
}

func newStats() *stats {
	s := &stats{}
	for k := range s.statuses {
		s.statuses[k] = make(map[int]int64)
	}
	return s
}

// since records the duration of one request begun at start, whatever its
// outcome.
func (s *stats) since(k kind, start time.Time) { s.latency[k].add(time.Since(start)) }

func (s *stats) record(k kind, o outcome, id uint64, detail string) {
	s.counts[k][o].Add(1)
	if o == oOK {
		return
	}
	s.mu.Lock()
	if len(s.samples[k][o]) < maxSamples {
		s.samples[k][o] = append(s.samples[k][o], sample{id, fmt.Sprintf("id=%d: %s", id, detail)})
	}
	s.mu.Unlock()
	if s.logf != nil {
		s.logf("%s %s id=%d: %s", kindNames[k], outcomeNames[o], id, detail)
	}
}

func (s *stats) status(k kind, code int) {
	s.mu.Lock()
	s.statuses[k][code]++
	s.mu.Unlock()
}

func (s *stats) total(k kind) int64 {
	var n int64
	for o := range nOutcomes {
		n += s.counts[k][o].Load()
	}
	return n
}

func (s *stats) get(k kind, o outcome) int64 { return s.counts[k][o].Load() }

func (s *stats) sum(o outcome, kinds ...kind) int64 {
	var n int64
	for _, k := range kinds {
		n += s.counts[k][o].Load()
	}
	return n
}

// progressLine is the one-line summary printed every few seconds.
func (s *stats) progressLine() string {
	var b strings.Builder
	var all int64
	for k := range nKinds {
		all += s.total(k)
	}
	fmt.Fprintf(&b, "requests=%d (", all)
	for k := range nKinds {
		if k > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s %d", kindNames[k], s.total(k))
	}
	b.WriteString(")")
	for o := oVisible; o < nOutcomes; o++ {
		fmt.Fprintf(&b, " %s=%d", outcomeNames[o], s.sum(o, allKinds...))
	}
	return b.String()
}

// writeTable prints the per-kind outcome table.
func (s *stats) writeTable(w io.Writer) {
	fmt.Fprintf(w, "| %-6s | %8s | %8s | %14s | %12s | %17s | %15s |\n",
		"kind", "total", "ok", "failed-visibly", "error-status", "unexplained-error", "failed-silently")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 8), strings.Repeat("-", 10),
		strings.Repeat("-", 10), strings.Repeat("-", 16), strings.Repeat("-", 14),
		strings.Repeat("-", 19), strings.Repeat("-", 17))
	for k := range nKinds {
		fmt.Fprintf(w, "| %-6s | %8d | %8d | %14d | %12d | %17d | %15d |\n", kindNames[k], s.total(k),
			s.get(k, oOK), s.get(k, oVisible), s.get(k, oStatus), s.get(k, oUnexplained), s.get(k, oSilent))
	}
}

type sample struct {
	id     uint64
	detail string
}

func statusList(m map[int]int64) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", c, m[c]))
	}
	return strings.Join(parts, ", ")
}

// histogram counts durations in power-of-two buckets from 1ms.
type histogram struct {
	buckets [24]atomic.Int64 // bucket i: < 2^i ms; the last one takes the rest
	max     atomic.Int64
}

func (h *histogram) add(d time.Duration) {
	ms := d.Milliseconds()
	i := 0
	for i < len(h.buckets)-1 && ms >= 1<<i {
		i++
	}
	h.buckets[i].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	var total int64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	want := int64(q*float64(total) + 0.5)
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= want {
			return time.Duration(1<<i) * time.Millisecond
		}
	}
	return time.Duration(h.max.Load())
}

func (s *stats) writeLatency(w io.Writer) {
	fmt.Fprint(w, "latency (bucket upper bounds):")
	for k := range nKinds {
		h := &s.latency[k]
		fmt.Fprintf(w, " %s p50<=%v p99<=%v max=%v;", kindNames[k], h.quantile(0.5), h.quantile(0.99),
			time.Duration(h.max.Load()).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
}
