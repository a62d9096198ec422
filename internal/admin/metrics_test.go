package admin

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluiceproxy/sluice/proxy"
)

// gathered registers cs on a pedantic registry (which checks that what
// Collect sends matches Describe) and returns the text exposition.
func gathered(t *testing.T, cs ...prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if err := writeText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestMetricsLabels(t *testing.T) {
	m := NewMetrics()
	for _, s := range []proxy.Summary{
		{Method: "GET", Status: 200, Upstream: "10.0.0.1:80", Attempts: 1, Duration: 3 * time.Millisecond, UpstreamLatency: 2 * time.Millisecond, BytesOut: 100},
		{Method: "GET", Status: 200, Upstream: "10.0.0.1:80", Attempts: 3, Duration: 300 * time.Microsecond, UpstreamLatency: 100 * time.Microsecond, BytesOut: 50},
		{Method: "get", Status: 404, Upstream: "10.0.0.2:80", Attempts: 1, Duration: time.Millisecond, UpstreamLatency: time.Millisecond},
		{Method: "PURGE", Status: 502, Upstream: "10.0.0.2:80", Attempts: 2, Duration: 20 * time.Second, Err: errors.New("refused")},
		{Method: "POST", Status: 0, Attempts: 0, Duration: time.Microsecond, BytesIn: 7, Aborted: true},
		{Method: "PUT", Status: 600, Duration: -time.Second},
	} {
		m.Observe(s)
	}
	text := gathered(t, m)
	for _, want := range []string{
		`sluice_requests_total{code="200",method="GET"} 2`,
		`sluice_requests_total{code="404",method="OTHER"} 1`,
		`sluice_requests_total{code="502",method="OTHER"} 1`,
		`sluice_requests_total{code="other",method="POST"} 1`,
		`sluice_requests_total{code="other",method="PUT"} 1`,
		`sluice_request_duration_seconds_bucket{code_class="2xx",le="0.00025"} 0`,
		`sluice_request_duration_seconds_bucket{code_class="2xx",le="0.0005"} 1`,
		`sluice_request_duration_seconds_bucket{code_class="2xx",le="0.0025"} 1`,
		`sluice_request_duration_seconds_bucket{code_class="2xx",le="0.005"} 2`,
		`sluice_request_duration_seconds_bucket{code_class="2xx",le="+Inf"} 2`,
		`sluice_request_duration_seconds_sum{code_class="2xx"} 0.0033`,
		`sluice_request_duration_seconds_count{code_class="2xx"} 2`,
		`sluice_request_duration_seconds_bucket{code_class="4xx",le="0.001"} 1`,
		`sluice_request_duration_seconds_bucket{code_class="5xx",le="10"} 0`,
		`sluice_request_duration_seconds_bucket{code_class="5xx",le="+Inf"} 1`,
		`sluice_request_duration_seconds_count{code_class="other"} 2`,
		`sluice_retries_total 3`,
		`sluice_aborted_responses_total 1`,
		`sluice_request_bytes_total 7`,
		`sluice_response_bytes_total 150`,
		`sluice_upstream_requests_total{code="200",upstream="10.0.0.1:80"} 2`,
		`sluice_upstream_requests_total{code="404",upstream="10.0.0.2:80"} 1`,
		`sluice_upstream_requests_total{code="502",upstream="10.0.0.2:80"} 1`,
		`sluice_upstream_response_latency_seconds_count{upstream="10.0.0.1:80"} 2`,
		`sluice_upstream_response_latency_seconds_sum{upstream="10.0.0.1:80"} 0.0021`,
		// the 502 got no headers: only the 404 is timed
		`sluice_upstream_response_latency_seconds_count{upstream="10.0.0.2:80"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	if strings.Contains(text, `code_class="1xx"`) || strings.Contains(text, `code_class="3xx"`) {
		t.Error("empty status classes are exposed")
	}
	if t.Failed() {
		t.Log(text)
	}
}

func TestMetricsUpstreamCap(t *testing.T) {
	m := NewMetrics()
	m.upstreams.max = 2
	for _, a := range []string{"a:1", "b:1", "c:1", "d:1", "a:1"} {
		m.Observe(proxy.Summary{Method: "GET", Status: 200, Upstream: a, Attempts: 1})
	}
	text := gathered(t, m)
	for _, want := range []string{
		`sluice_upstream_requests_total{code="200",upstream="a:1"} 2`,
		`sluice_upstream_requests_total{code="200",upstream="b:1"} 1`,
		`sluice_upstream_requests_total{code="200",upstream="other"} 2`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s in\n%s", want, text)
		}
	}
	if n := testutil.CollectAndCount(m, "sluice_upstream_requests_total"); n != 3 {
		t.Errorf("%d upstream series, want 3", n)
	}
}

// TestMetricsEmpty: a fresh Metrics exposes the unlabelled counters at 0
// and nothing else.
func TestMetricsEmpty(t *testing.T) {
	text := gathered(t, NewMetrics())
	for _, want := range []string{"sluice_retries_total 0", "sluice_aborted_responses_total 0",
		"sluice_request_bytes_total 0", "sluice_response_bytes_total 0"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	if strings.Contains(text, "sluice_requests_total{") || strings.Contains(text, "sluice_upstream") {
		t.Errorf("labelled series before any request:\n%s", text)
	}
}

func TestMetricsConcurrent(t *testing.T) {
	m := NewMetrics()
	const goroutines, each = 8, 1000
	done := make(chan struct{})
	for g := range goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			up := []string{"a:1", "b:1", "c:1"}[g%3]
			for range each {
				m.Observe(proxy.Summary{Method: "GET", Status: 200, Upstream: up, Attempts: 2, Duration: time.Millisecond, UpstreamLatency: time.Millisecond})
			}
		}()
	}
	// scrapes while counting: the race detector checks the accesses
	for range 5 {
		gathered(t, m)
	}
	for range goroutines {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("observers did not finish")
		}
	}
	text := gathered(t, m)
	for _, want := range []string{
		`sluice_requests_total{code="200",method="GET"} 8000`,
		`sluice_retries_total 8000`,
		`sluice_request_duration_seconds_count{code_class="2xx"} 8000`,
		`sluice_upstream_requests_total{code="200",upstream="a:1"} 3000`,
		`sluice_upstream_requests_total{code="200",upstream="c:1"} 2000`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}

var allocSummaries = []proxy.Summary{
	{Method: "GET", Status: 200, Upstream: "10.0.0.1:8080", Attempts: 1, Duration: 2 * time.Millisecond, UpstreamLatency: time.Millisecond, BytesOut: 1234},
	{Method: "POST", Status: 201, Upstream: "10.0.0.2:8080", Attempts: 2, Duration: 40 * time.Millisecond, UpstreamLatency: 30 * time.Millisecond, BytesIn: 10, BytesOut: 20},
	{Method: "PURGE", Status: 502, Upstream: "10.0.0.1:8080", Attempts: 3, Duration: time.Second, Err: errors.New("x")},
	{Method: "GET", Status: 499, Upstream: "10.0.0.2:8080", Attempts: 1, Duration: 5 * time.Second, Aborted: true},
	{Method: "GET", Status: 400, Duration: time.Microsecond},
	{Method: "HEAD", Status: 0, Duration: 20 * time.Second},
}

// TestObserveAllocs: the request path allocates nothing once an upstream
// address has been seen.
func TestObserveAllocs(t *testing.T) {
	m := NewMetrics()
	for _, s := range allocSummaries {
		m.Observe(s) // first sight of each address
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		m.Observe(allocSummaries[i%len(allocSummaries)])
		i++
	})
	if allocs != 0 {
		t.Fatalf("Observe: %v allocs/op, want 0", allocs)
	}
	// and beyond the upstream cap
	m.upstreams.max = 2
	over := proxy.Summary{Method: "GET", Status: 200, Upstream: "10.9.9.9:1", Attempts: 1}
	m.Observe(over)
	if allocs := testing.AllocsPerRun(1000, func() { m.Observe(over) }); allocs != 0 {
		t.Fatalf("Observe past the upstream cap: %v allocs/op, want 0", allocs)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := NewMetrics()
	s := allocSummaries[0]
	m.Observe(s)
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(s)
	}
}

// BenchmarkObserveParallel: every goroutine counts the same series, the
// worst case for cache-line sharing.
func BenchmarkObserveParallel(b *testing.B) {
	m := NewMetrics()
	s := allocSummaries[0]
	m.Observe(s)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(s)
		}
	})
}

func BenchmarkCollect(b *testing.B) {
	m := NewMetrics()
	for _, s := range allocSummaries {
		m.Observe(s)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMetricsSumsShards: a scrape adds up every shard, whichever CPU
// counted.
func TestMetricsSumsShards(t *testing.T) {
	m := NewMetrics()
	s := proxy.Summary{Method: "GET", Status: 200, Upstream: "a:1", Attempts: 2, Duration: time.Millisecond, UpstreamLatency: time.Millisecond, BytesOut: 3}
	m.Observe(s) // creates a:1
	u := m.upstreams.get("a:1")
	for i := range m.shards {
		sh := &m.shards[i]
		sh.requests[methodIndex("GET")][codeIndex(200)].Add(1)
		sh.durations[classIndex(200)].observe(time.Millisecond)
		sh.retries.Add(1)
		sh.bytesOut.Add(3)
		us := &u.shards[sh.up]
		us.requests[codeIndex(200)].Add(1)
		us.latency.observe(time.Millisecond)
	}
	n := len(m.shards) + 1
	text := gathered(t, m)
	for _, want := range []string{
		fmt.Sprintf(`sluice_requests_total{code="200",method="GET"} %d`, n),
		fmt.Sprintf(`sluice_request_duration_seconds_count{code_class="2xx"} %d`, n),
		fmt.Sprintf(`sluice_retries_total %d`, n),
		fmt.Sprintf(`sluice_response_bytes_total %d`, 3*n),
		fmt.Sprintf(`sluice_upstream_requests_total{code="200",upstream="a:1"} %d`, n),
		fmt.Sprintf(`sluice_upstream_response_latency_seconds_count{upstream="a:1"} %d`, n),
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s in\n%s", want, text)
		}
	}
	if len(u.shards) != min(len(m.shards), maxUpstreamShards) {
		t.Errorf("%d upstream shards for %d CPU shards", len(u.shards), len(m.shards))
	}
}
