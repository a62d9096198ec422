package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluiceproxy/sluice/upstream"
)

// poolCollector reads a pool's Status at scrape time. The pool keeps these
// counts anyway (for health and load balancing), so exposing them costs the
// request path nothing.
type poolCollector struct {
	pool *upstream.Pool
}

// NewPoolCollector returns a collector of pool's per-upstream state: health,
// requests in flight, attempts and failures. Series are labelled with the
// upstream's address, so their number is the pool's size.
func NewPoolCollector(pool *upstream.Pool) prometheus.Collector {
	return poolCollector{pool}
}

var (
	descUpHealthy = prometheus.NewDesc("sluice_upstream_healthy",
		"1 when the upstream may be selected (not set down, passing active checks, not ejected), else 0.",
		[]string{"upstream"}, nil)
	descUpInflight = prometheus.NewDesc("sluice_upstream_inflight",
		"Attempts in progress on the upstream.", []string{"upstream"}, nil)
	descUpAttempts = prometheus.NewDesc("sluice_upstream_attempts_total",
		"Attempts completed on the upstream, retries included.", []string{"upstream"}, nil)
	descUpFailures = prometheus.NewDesc("sluice_upstream_failures_total",
		"Attempts on the upstream that failed: transport errors, plus bad statuses and slow answers when passive health counts them.",
		[]string{"upstream"}, nil)
	descUpsHealthy = prometheus.NewDesc("sluice_upstreams_healthy",
		"Upstreams in the pool that may be selected.", nil, nil)
	descUpsTotal = prometheus.NewDesc("sluice_upstreams",
		"Upstreams in the pool.", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUpHealthy, descUpInflight, descUpAttempts, descUpFailures, descUpsHealthy, descUpsTotal} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Status()
	seen := make(map[string]bool, len(st.Upstreams))
	for _, u := range st.Upstreams {
		// Counts are per address; a second member with the same address
		// would repeat a series, which the registry refuses.
		if seen[u.Addr] {
			continue
		}
		seen[u.Addr] = true
		healthy := 0.0
		if u.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(descUpHealthy, prometheus.GaugeValue, healthy, u.Addr)
		ch <- prometheus.MustNewConstMetric(descUpInflight, prometheus.GaugeValue, float64(u.Inflight), u.Addr)
		ch <- prometheus.MustNewConstMetric(descUpAttempts, prometheus.CounterValue, float64(u.Requests), u.Addr)
		ch <- prometheus.MustNewConstMetric(descUpFailures, prometheus.CounterValue, float64(u.Failures), u.Addr)
	}
	ch <- prometheus.MustNewConstMetric(descUpsHealthy, prometheus.GaugeValue, float64(st.Healthy))
	ch <- prometheus.MustNewConstMetric(descUpsTotal, prometheus.GaugeValue, float64(len(st.Upstreams)))
}
