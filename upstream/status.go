package upstream

import (
	"fmt"
	"time"
)

// PoolStatus is a point-in-time view of a pool, for the admin API and
// metrics. It marshals to JSON as is.
type PoolStatus struct {
	Policy string `json:"policy"`
	// Healthy counts upstreams that are up (ignoring request limits).
	Healthy   int              `json:"healthy"`
	Upstreams []UpstreamStatus `json:"upstreams"`
	Discovery *DiscoveryStatus `json:"discovery,omitempty"`
}

// UpstreamStatus describes one member. Counters and latency are per
// address, shared by every pool proxying there.
type UpstreamStatus struct {
	Addr        string `json:"addr"`
	Scheme      string `json:"scheme"`
	Weight      int    `json:"weight"`
	MaxRequests int    `json:"max_requests,omitempty"`
	// Healthy is false when set down, failing active checks or ejected;
	// Reasons then says which.
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons,omitempty"`
	// Down is the operator's SetDown.
	Down    bool           `json:"down,omitempty"`
	Active  *ActiveStatus  `json:"active,omitempty"`
	Passive *PassiveStatus `json:"passive,omitempty"`
	// SlowStart is the share of its normal traffic the upstream gets now:
	// below 1 while it ramps up after recovering.
	SlowStart float64 `json:"slow_start"`
	Inflight  int64   `json:"inflight"`
	// Requests counts completed attempts; Failures those that failed
	// (transport failures, plus bad statuses and slow answers when passive
	// checks count them).
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// LatencyEWMA is a moving average of time to response headers (of
	// attempts that got headers); LatencyP99 the 99th percentile of the last
	// LatencySamples (up to 256).
	LatencyEWMA    float64 `json:"latency_ewma_ms"`
	LatencyP99     float64 `json:"latency_p99_ms"`
	LatencySamples int     `json:"latency_samples"`
}

// Status returns a snapshot of the pool. It takes no lock the hot path
// takes, so calling it often is safe.
func (p *Pool) Status() PoolStatus {
	st := PoolStatus{Policy: describe(p.policy)}
	if n, ok := p.policy.(Named); ok {
		st.Policy = n.Name()
	}
	now := mono()
	ups := p.Upstreams()
	st.Upstreams = make([]UpstreamStatus, 0, len(ups))
	for _, u := range ups {
		us := u.status(now)
		if us.Healthy {
			st.Healthy++
		}
		st.Upstreams = append(st.Upstreams, us)
	}
	if p.disc != nil {
		st.Discovery = p.disc.status()
	}
	return st
}

func (u *Upstream) status(now int64) UpstreamStatus {
	us := UpstreamStatus{
		Addr: u.Addr, Scheme: u.Scheme, Weight: max(u.Weight, 1), MaxRequests: u.MaxRequests,
		Down: u.state.Load()&stDown != 0, SlowStart: u.ramp(), Inflight: u.Inflight(),
	}
	if us.Down {
		us.Reasons = append(us.Reasons, "set down")
	}
	if u.act != nil {
		us.Active = u.act.status()
		if !us.Active.Healthy {
			us.Reasons = append(us.Reasons, "active check failing: "+us.Active.LastError)
		}
	}
	if u.pas != nil {
		u.pas.ejected() // ends an ejection whose time is up
		us.Passive = u.pas.status(now)
		if us.Passive.Ejected {
			us.Reasons = append(us.Reasons, fmt.Sprintf("ejected by passive checks until %s (ejection %d in a row)",
				us.Passive.EjectedUntil.Format(time.RFC3339), us.Passive.Ejections))
		}
	}
	us.Healthy = len(us.Reasons) == 0
	if h := u.h; h != nil {
		us.Requests = h.requests.Load()
		us.Failures = h.failures.Load()
		ewma, p99, n := h.lat.snapshot()
		us.LatencyEWMA = ms(ewma)
		us.LatencyP99 = ms(p99)
		us.LatencySamples = n
	}
	return us
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// timeOrNil is t for a status field, nil (left out of the JSON) when t is
// zero: the event has not happened.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
