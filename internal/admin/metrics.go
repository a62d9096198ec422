package admin

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluiceproxy/sluice/proxy"
)

// Metrics counts finished requests for Prometheus. Its Observe method is
// what proxy.Config.Observe takes; it is a prometheus.Collector that turns
// the counts into series at scrape time. Make one with NewMetrics.
//
// Observe is on every request's path, so it takes no lock and allocates
// nothing: every count is an atomic in a fixed array indexed by method,
// status and histogram bucket, and the only lookup, the upstream's address,
// reads a copy-on-write map. The counts are sharded, about one shard per CPU
// (per upstream, up to maxUpstreamShards), so cores do not fight over the
// same cache lines; a scrape adds the shards up.
//
// Label values are fixed sets (methods outside the standard nine are
// "OTHER", statuses outside 100-599 "other") or upstream addresses, which
// come from the configuration or discovery and are capped at MaxUpstreams,
// so no client can make a series appear.
type Metrics struct {
	shards    []shard
	next      atomic.Uint32 // round robin for local's New
	local     sync.Pool     // *shard: which shard this P writes, see shard()
	upstreams upstreamSet
}

// shard holds the request-wide counts; the padding keeps a neighbour's hot
// counters off its last cache line.
type shard struct {
	up        int // index into upstreamStats.shards
	requests  [numMethods][numCodes]atomic.Uint64
	durations [numClasses]histogram
	retries   atomic.Uint64
	aborted   atomic.Uint64
	bytesIn   atomic.Uint64
	bytesOut  atomic.Uint64
	_         [64]byte
}

// MaxUpstreams caps the upstream addresses Metrics keeps series for. The
// rest are counted under upstream="other".
const MaxUpstreams = 1024

// maxShards bounds the memory of the shards (about 41 KiB each), and
// maxUpstreamShards that of each upstream address (about 4 KiB a shard).
const (
	maxShards         = 64
	maxUpstreamShards = 8
)

// NewMetrics returns an empty Metrics.
func NewMetrics() *Metrics {
	n := min(max(runtime.GOMAXPROCS(0), 1), maxShards)
	m := &Metrics{shards: make([]shard, n)}
	nUp := min(n, maxUpstreamShards)
	for i := range m.shards {
		m.shards[i].up = i % nUp
	}
	// sync.Pool keeps one item per P, so Get then Put is a lock-free
	// P-local lookup. The items are pointers into m.shards, never
	// allocated: when a GC empties the pool, New hands out shards round
	// robin again, and every count stays where it was.
	m.local.New = func() any {
		return &m.shards[int(m.next.Add(1)-1)%len(m.shards)]
	}
	m.upstreams.max = MaxUpstreams
	m.upstreams.shards = nUp
	m.upstreams.other.shards = make([]upstreamShard, nUp)
	return m
}

// shard returns the shard of the P the caller runs on (usually).
func (m *Metrics) shard() *shard {
	sh := m.local.Get().(*shard)
	m.local.Put(sh)
	return sh
}

// Observe counts one finished request. It is meant for
// proxy.Config.Observe and is safe for concurrent use.
func (m *Metrics) Observe(s proxy.Summary) {
	code := codeIndex(s.Status)
	sh := m.shard()
	sh.requests[methodIndex(s.Method)][code].Add(1)
	sh.durations[classIndex(s.Status)].observe(s.Duration)
	if s.Attempts > 1 {
		sh.retries.Add(uint64(s.Attempts - 1))
	}
	if s.Aborted && s.Status != proxy.StatusClientClosedRequest {
		// A client that left is a 499 already; this counts the
		// responses the client got cut short.
		sh.aborted.Add(1)
	}
	if s.BytesIn > 0 {
		sh.bytesIn.Add(uint64(s.BytesIn))
	}
	if s.BytesOut > 0 {
		sh.bytesOut.Add(uint64(s.BytesOut))
	}
	if s.Upstream == "" {
		return
	}
	u := &m.upstreams.get(s.Upstream).shards[sh.up]
	u.requests[code].Add(1)
	if s.UpstreamLatency > 0 { // 0: no response headers came
		u.latency.observe(s.UpstreamLatency)
	}
}

// Methods: the eight of RFC 9110 and PATCH (RFC 5789), then everything else.
var methodNames = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

const numMethods = len(methodNames)

// methodIndex maps a method to its slot; a switch on strings compiles to a
// length check and a compare, with no hashing and no allocation.
func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "DELETE":
		return 4
	case "PATCH":
		return 5
	case "OPTIONS":
		return 6
	case "CONNECT":
		return 7
	case "TRACE":
		return 8
	}
	return numMethods - 1
}

// Statuses 100-599 have a slot each; the last slot is everything else.
const (
	minCode  = 100
	maxCode  = 599
	numCodes = maxCode - minCode + 2
)

var codeNames = func() (n [numCodes]string) {
	for i := range numCodes - 1 {
		n[i] = strconv.Itoa(minCode + i)
	}
	n[numCodes-1] = "other"
	return n
}()

func codeIndex(status int) int {
	if status < minCode || status > maxCode {
		return numCodes - 1
	}
	return status - minCode
}

// Status classes for the duration histogram: 1xx-5xx, then "other".
var classNames = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"}

const numClasses = len(classNames)

func classIndex(status int) int {
	if status < minCode || status > maxCode {
		return numClasses - 1
	}
	return status/100 - 1
}

// upstreamStats are the counts of one upstream address, in shards.
type upstreamStats struct {
	addr   string
	shards []upstreamShard
}

type upstreamShard struct {
	requests [numCodes]atomic.Uint64
	latency  histogram
	_        [64]byte
}

// upstreamSet maps upstream addresses to their counts. Readers load the
// current map without a lock; a new address copies it under mu, which
// happens once per address.
type upstreamSet struct {
	m      atomic.Pointer[map[string]*upstreamStats]
	mu     sync.Mutex
	max    int
	shards int           // per address
	other  upstreamStats // addresses beyond max
}

func (s *upstreamSet) get(addr string) *upstreamStats {
	m := s.m.Load()
	if m != nil {
		if u, ok := (*m)[addr]; ok {
			return u
		}
		if len(*m) >= s.max {
			return &s.other
		}
	}
	return s.add(addr)
}

func (s *upstreamSet) add(addr string) *upstreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var old map[string]*upstreamStats
	if p := s.m.Load(); p != nil {
		old = *p
	}
	if u, ok := old[addr]; ok {
		return u
	}
	if len(old) >= s.max {
		return &s.other
	}
	next := make(map[string]*upstreamStats, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	u := &upstreamStats{addr: strings.Clone(addr), shards: make([]upstreamShard, s.shards)}
	next[u.addr] = u
	s.m.Store(&next)
	return u
}

// each calls fn for every upstream with counts, "other" last if used.
func (s *upstreamSet) each(fn func(label string, u *upstreamStats)) {
	if p := s.m.Load(); p != nil {
		for _, u := range *p {
			fn(u.addr, u)
		}
	}
	if s.other.used() {
		fn("other", &s.other)
	}
}

func (u *upstreamStats) used() bool {
	for i := range u.shards {
		for j := range u.shards[i].requests {
			if u.shards[i].requests[j].Load() != 0 {
				return true
			}
		}
	}
	return false
}

// Histogram buckets, upper bounds: 250µs to 10s. A proxy on a fast network
// adds well under a millisecond, so the low end is finer than Prometheus's
// default buckets.
var bucketBounds = [...]time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

var bucketSeconds = func() (b [len(bucketBounds)]float64) {
	for i, d := range bucketBounds {
		b[i] = d.Seconds()
	}
	return b
}()

// histogram counts durations into bucketBounds (non-cumulative; the last
// slot is +Inf) and sums them in nanoseconds: two atomic adds per
// observation. The count is the sum of the buckets, so a scrape always sees
// buckets and count agree; the sum may be an observation in progress behind.
// In nanoseconds a uint64 holds 584 years of summed durations.
type histogram struct {
	counts [len(bucketBounds) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := 0
	for i < len(bucketBounds) && d > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(d))
}

// histSnapshot is the sum of one or more histograms at scrape time.
type histSnapshot struct {
	counts [len(bucketBounds) + 1]uint64
	sumNs  uint64
}

func (s *histSnapshot) add(h *histogram) {
	for i := range h.counts {
		s.counts[i] += h.counts[i].Load()
	}
	s.sumNs += h.sumNs.Load()
}

func (s *histSnapshot) count() uint64 {
	var n uint64
	for _, c := range s.counts {
		n += c
	}
	return n
}

// metric returns s as a constant Prometheus histogram (cumulative buckets).
func (s *histSnapshot) metric(desc *prometheus.Desc, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bucketBounds))
	var n uint64
	for i, b := range bucketSeconds {
		n += s.counts[i]
		buckets[b] = n
	}
	n += s.counts[len(bucketBounds)]
	sum := float64(s.sumNs) / float64(time.Second)
	return prometheus.MustNewConstHistogram(desc, n, sum, buckets, labels...)
}

var (
	descRequests = prometheus.NewDesc("sluice_requests_total",
		"Requests finished, by method and the status sent to the client (499: the client left first).",
		[]string{"method", "code"}, nil)
	descDuration = prometheus.NewDesc("sluice_request_duration_seconds",
		"Time from receiving a request's headers to the end of its response, by status class.",
		[]string{"code_class"}, nil)
	descRetries = prometheus.NewDesc("sluice_retries_total",
		"Attempts after the first, summed over requests.", nil, nil)
	descAborted = prometheus.NewDesc("sluice_aborted_responses_total",
		"Responses cut short (the upstream's body broke, or a panic): the client saw a truncated body or a reset stream. Clients that left are not counted here but as code 499.", nil, nil)
	descBytesIn = prometheus.NewDesc("sluice_request_bytes_total",
		"Request body bytes read from clients (and client-to-upstream bytes of tunnels).", nil, nil)
	descBytesOut = prometheus.NewDesc("sluice_response_bytes_total",
		"Response body bytes written to clients (and upstream-to-client bytes of tunnels).", nil, nil)
	descUpRequests = prometheus.NewDesc("sluice_upstream_requests_total",
		"Requests whose final attempt went to this upstream, by the status sent to the client.",
		[]string{"upstream", "code"}, nil)
	descUpLatency = prometheus.NewDesc("sluice_upstream_response_latency_seconds",
		"Time to the response headers of a request's final attempt, by upstream.",
		[]string{"upstream"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descRetries, descAborted,
		descBytesIn, descBytesOut, descUpRequests, descUpLatency} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Labelled counters appear once
// they are non-zero, as with a CounterVec.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	var requests [numMethods][numCodes]uint64
	var durations [numClasses]histSnapshot
	var retries, aborted, bytesIn, bytesOut uint64
	for i := range m.shards {
		sh := &m.shards[i]
		for mi := range sh.requests {
			for ci := range sh.requests[mi] {
				requests[mi][ci] += sh.requests[mi][ci].Load()
			}
		}
		for ci := range sh.durations {
			durations[ci].add(&sh.durations[ci])
		}
		retries += sh.retries.Load()
		aborted += sh.aborted.Load()
		bytesIn += sh.bytesIn.Load()
		bytesOut += sh.bytesOut.Load()
	}
	for mi := range requests {
		for ci, n := range requests[mi] {
			if n != 0 {
				ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), methodNames[mi], codeNames[ci])
			}
		}
	}
	for ci := range durations {
		if durations[ci].count() != 0 {
			ch <- durations[ci].metric(descDuration, classNames[ci])
		}
	}
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(retries))
	ch <- prometheus.MustNewConstMetric(descAborted, prometheus.CounterValue, float64(aborted))
	ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(bytesIn))
	ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(bytesOut))
	m.upstreams.each(func(label string, u *upstreamStats) {
		var requests [numCodes]uint64
		var lat histSnapshot
		for i := range u.shards {
			us := &u.shards[i]
			for ci := range us.requests {
				requests[ci] += us.requests[ci].Load()
			}
			lat.add(&us.latency)
		}
		for ci, n := range requests {
			if n != 0 {
				ch <- prometheus.MustNewConstMetric(descUpRequests, prometheus.CounterValue, float64(n), label, codeNames[ci])
			}
		}
		if lat.count() != 0 {
			ch <- lat.metric(descUpLatency, label)
		}
	})
}
