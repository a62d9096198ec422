package upstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Target is one address a Source found.
type Target struct {
	// Addr is "host:port".
	Addr string
	// Weight becomes Upstream.Weight; 0 = Discovery.Weight.
	Weight int
	// Priority orders the pool's members, lowest first (DNS SRV priority),
	// so the first policy fails over in priority order.
	Priority int
}

// Source finds the members of a pool; Discovery polls it.
type Source interface {
	// Lookup returns the current targets and how long the answer may be
	// used (a DNS TTL), or 0 when the source does not say. An error, or no
	// targets, keeps the previous answer for the grace period.
	Lookup(ctx context.Context) ([]Target, time.Duration, error)
}

// Static is a fixed list of targets.
type Static []Target

// Lookup implements Source.
func (s Static) Lookup(context.Context) ([]Target, time.Duration, error) { return s, 0, nil }

// String names the source in status output.
func (s Static) String() string { return fmt.Sprintf("static (%d targets)", len(s)) }

// Discovery keeps a pool's members up to date from a Source. A zero field
// means its default.
type Discovery struct {
	Source Source
	// Refresh is the longest time between lookups. An answer with a shorter
	// TTL is looked up again when it expires, but not sooner than
	// MinRefresh. Default 30s.
	Refresh time.Duration
	// MinRefresh is the shortest time between lookups, and the first retry
	// delay after a failed one (doubling up to Refresh). Default 1s.
	MinRefresh time.Duration
	// GracePeriod keeps serving the last good answer this long past its
	// validity while lookups fail or come back empty; after it the pool is
	// emptied (stale addresses may belong to someone else by then).
	// Default 5m; negative = keep the last good answer for ever.
	GracePeriod time.Duration
	// Timeout bounds one lookup. Default 5s.
	Timeout time.Duration
	// Scheme, Weight and MaxRequests are given to discovered upstreams.
	// Default "http", 1, unlimited.
	Scheme      string
	Weight      int
	MaxRequests int
}

var errNoTargets = errors.New("lookup found no targets")

// discoverer runs one pool's Discovery on its own goroutine.
type discoverer struct {
	p   *Pool
	cfg Discovery

	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	mu          sync.Mutex
	has         bool // the pool holds a good answer
	validUntil  time.Time
	failures    int // consecutive
	lastLookup  time.Time
	lastSuccess time.Time
	lastErr     string
}

func newDiscoverer(p *Pool, cfg Discovery) (*discoverer, error) {
	if cfg.Source == nil {
		return nil, errors.New("discovery: no source (want a DNS A, DNS SRV or static source)")
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 30 * time.Second
	}
	if cfg.MinRefresh == 0 {
		cfg.MinRefresh = min(time.Second, cfg.Refresh)
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 5 * time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	switch {
	case cfg.Refresh < 0:
		return nil, fmt.Errorf("discovery: refresh %v: must be positive", cfg.Refresh)
	case cfg.MinRefresh < 0 || cfg.MinRefresh > cfg.Refresh:
		return nil, fmt.Errorf("discovery: min_refresh %v: must be positive and at most refresh (%v)", cfg.MinRefresh, cfg.Refresh)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("discovery: timeout %v: must be positive", cfg.Timeout)
	case cfg.Scheme != "http" && cfg.Scheme != "https":
		return nil, fmt.Errorf("discovery: scheme %q: want http or https", cfg.Scheme)
	case cfg.Weight < 0 || cfg.MaxRequests < 0:
		return nil, errors.New("discovery: weight and max_requests must not be negative")
	}
	return &discoverer{p: p, cfg: cfg}, nil
}

// start does the first lookup before returning, so a new pool has members
// when its lookup succeeds, then refreshes in the background.
func (d *discoverer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.done = make(chan struct{})
	next := d.refresh(ctx)
	go d.run(ctx, next)
}

func (d *discoverer) stop() {
	d.stopOnce.Do(func() {
		d.cancel()
		<-d.done
	})
}

func (d *discoverer) run(ctx context.Context, next time.Duration) {
	defer close(d.done)
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next = d.refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		t.Reset(next)
	}
}

// refresh looks up once, applies the answer and returns when to look next.
func (d *discoverer) refresh(ctx context.Context) time.Duration {
	lctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	targets, ttl, err := d.cfg.Source.Lookup(lctx)
	cancel()
	if ctx.Err() != nil {
		return 0 // stopping
	}
	if err == nil && len(targets) == 0 {
		err = errNoTargets
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastLookup = now
	if err != nil {
		d.failures++
		d.lastErr = err.Error()
		if d.has && d.cfg.GracePeriod >= 0 && now.After(d.validUntil.Add(d.cfg.GracePeriod)) {
			d.p.SetUpstreams(nil)
			d.has = false
		}
		backoff := d.cfg.MinRefresh << min(d.failures-1, 16)
		return min(backoff, d.cfg.Refresh)
	}
	d.failures = 0
	d.lastErr = ""
	d.lastSuccess = now
	d.has = true
	interval := d.cfg.Refresh
	if ttl > 0 && ttl < interval {
		interval = max(ttl, d.cfg.MinRefresh)
	}
	d.validUntil = now.Add(max(ttl, interval))
	d.apply(targets)
	return interval
}

// apply turns targets into members. Members still listed with the same
// weight are kept as they are; the rest are new Upstream values, whose
// state carries over from the registry when their address is known.
func (d *discoverer) apply(targets []Target) {
	ts := slices.Clone(targets)
	slices.SortStableFunc(ts, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Addr, b.Addr))
	})
	cur := d.p.Upstreams()
	byAddr := make(map[string]*Upstream, len(cur))
	for _, u := range cur {
		byAddr[u.Addr] = u
	}
	next := make([]*Upstream, 0, len(ts))
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if t.Addr == "" || seen[t.Addr] {
			continue
		}
		seen[t.Addr] = true
		w := t.Weight
		if w <= 0 {
			w = d.cfg.Weight
		}
		if u := byAddr[t.Addr]; u != nil && u.Weight == w {
			next = append(next, u)
			continue
		}
		next = append(next, &Upstream{Addr: t.Addr, Scheme: d.cfg.Scheme, Weight: w, MaxRequests: d.cfg.MaxRequests})
	}
	if slices.Equal(next, cur) {
		return
	}
	d.p.SetUpstreams(next)
}

// DiscoveryStatus is the discovery part of PoolStatus.
type DiscoveryStatus struct {
	Source      string     `json:"source"`
	LastLookup  *time.Time `json:"last_lookup,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// LastError is set while lookups fail; Failures counts them in a row.
	LastError string `json:"last_error,omitempty"`
	Failures  int    `json:"failures"`
	// ValidUntil is when the current answer expires; Stale says it has and
	// the pool is serving it within the grace period.
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	Stale      bool       `json:"stale"`
}

func (d *discoverer) status() *DiscoveryStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &DiscoveryStatus{Source: describe(d.cfg.Source), LastError: d.lastErr, Failures: d.failures}
	st.LastLookup, st.LastSuccess = timeOrNil(d.lastLookup), timeOrNil(d.lastSuccess)
	if d.has {
		t := d.validUntil
		st.ValidUntil = &t
		st.Stale = time.Now().After(t)
	}
	return st
}

func describe(v any) string {
	if s, ok := v.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", v)
}
