package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// RetryPolicy says when a failed attempt is tried again. The rules that
// decide *whether* an attempt may be repeated are fixed, because getting them
// wrong sends a request twice:
//
//   - a dial error (no byte reached the upstream) is always retryable;
//   - any other transport error, or a status listed in Statuses, is retried
//     only for an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE,
//     or one carrying an Idempotency-Key header) whose body can be replayed;
//   - a client that went away stops everything.
type RetryPolicy struct {
	// Retries is how many extra attempts may follow the first one.
	// Default 2; a negative value disables retries.
	Retries int
	// TryDuration bounds the whole sequence of attempts, measured from the
	// first. No new attempt starts after it. Default 10s.
	TryDuration time.Duration
	// Backoff is the base of the exponential backoff between attempts; the
	// wait before retry n (n = 1, 2, ...) is uniformly random in
	// [0, min(BackoffMax, Backoff*2^(n-1))) ("full jitter"). Default 10ms.
	Backoff time.Duration
	// BackoffMax caps the wait. Default 1s.
	BackoffMax time.Duration
	// Statuses are upstream response statuses treated as a failed attempt
	// (e.g. 502, 503, 504). Default none. When attempts run out, the client
	// gets the last such response as it was.
	Statuses []int
	// BudgetRatio caps retries at this fraction of requests, so retries
	// cannot multiply load during an outage. Default 0.2. Retries after a
	// dial error are not counted: nothing reached an upstream.
	BudgetRatio float64
	// BudgetMinPerSecond retries are always allowed per second, so a quiet
	// proxy can still retry. Default 10.
	BudgetMinPerSecond int
}

func (p RetryPolicy) withDefaults() (RetryPolicy, error) {
	if p.Retries == 0 {
		p.Retries = 2
	}
	if p.Retries < 0 {
		p.Retries = 0
	}
	if p.TryDuration == 0 {
		p.TryDuration = 10 * time.Second
	}
	if p.Backoff == 0 {
		p.Backoff = 10 * time.Millisecond
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = time.Second
	}
	if p.BudgetRatio == 0 {
		p.BudgetRatio = 0.2
	}
	if p.BudgetMinPerSecond == 0 {
		p.BudgetMinPerSecond = 10
	}
	switch {
	case p.TryDuration < 0:
		return p, fmt.Errorf("proxy: RetryPolicy.TryDuration %v must be positive", p.TryDuration)
	case p.Backoff < 0 || p.BackoffMax < 0:
		return p, fmt.Errorf("proxy: RetryPolicy backoff durations must be positive")
	case p.BudgetRatio < 0 || p.BudgetRatio > 1:
		return p, fmt.Errorf("proxy: RetryPolicy.BudgetRatio %v must be between 0 and 1", p.BudgetRatio)
	}
	for _, s := range p.Statuses {
		if s < 200 || s > 599 {
			return p, fmt.Errorf("proxy: retry status %d is not a final HTTP status (200-599)", s)
		}
	}
	return p, nil
}

func (p *RetryPolicy) retryStatus(code int) bool {
	for _, s := range p.Statuses {
		if s == code {
			return true
		}
	}
	return false
}

// backoff returns the wait before retry n (n >= 1).
func (p *RetryPolicy) backoff(n int) time.Duration {
	ceiling := p.Backoff
	for i := 1; i < n && ceiling < p.BackoffMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.BackoffMax)
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// wait sleeps for d or until ctx ends; it reports whether the full wait
// elapsed.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// idempotent reports whether repeating r cannot change the upstream's state
// beyond the first time (RFC 9110 §9.2.2), or the client said so with an
// Idempotency-Key.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut,
		http.MethodDelete, http.MethodTrace:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// retryBudget is a token bucket filled by requests and drained by retries:
// each request adds ratio tokens, each retry takes one. On top, minPerSecond
// retries are allowed every second regardless.
type retryBudget struct {
	ratioMilli   int64
	capMilli     int64
	minPerSecond int64
	tokens       atomic.Int64 // in thousandths of a retry
	second       atomic.Int64 // unix second of floor window
	floorUsed    atomic.Int64
}

func newRetryBudget(ratio float64, minPerSecond int) *retryBudget {
	b := &retryBudget{
		ratioMilli:   int64(ratio * 1000),
		minPerSecond: int64(minPerSecond),
	}
	// Allow a burst of at most 100 retries banked from past traffic.
	b.capMilli = 100 * 1000
	return b
}

func (b *retryBudget) deposit() {
	// A full bucket, the usual state, is only read: every request writing
	// the shared counter would bounce its cache line between CPUs.
	if b.tokens.Load() >= b.capMilli {
		return
	}
	if b.tokens.Add(b.ratioMilli) > b.capMilli {
		b.tokens.Store(b.capMilli)
	}
}

// withdraw reports whether one retry may go ahead.
func (b *retryBudget) withdraw() bool {
	now := time.Now().Unix()
	if s := b.second.Load(); s != now && b.second.CompareAndSwap(s, now) {
		b.floorUsed.Store(0)
	}
	if b.floorUsed.Add(1) <= b.minPerSecond {
		return true
	}
	if b.tokens.Add(-1000) >= 0 {
		return true
	}
	b.tokens.Add(1000)
	return false
}
