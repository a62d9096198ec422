package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Dialer opens connections for TCP checks; *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// ActiveHealth probes upstreams on a timer, independently of traffic. A zero
// field means its default. One checker runs per address and check settings,
// shared by every pool that uses the same settings (see Registry).
type ActiveHealth struct {
	// TCP makes the check a TCP connect instead of an HTTP request.
	TCP bool
	// Method of the HTTP check. Default GET.
	Method string
	// Path (with optional query) of the HTTP check. Default "/".
	Path string
	// Host is the Host header of the HTTP check. Default the upstream
	// address.
	Host string
	// Header is added to the HTTP check request.
	Header http.Header
	// Port checks this port instead of the upstream's own; 0 = same.
	Port int
	// ExpectStatus is what a passing check answers. Default any 2xx.
	ExpectStatus Statuses
	// ExpectBody, when set, is a regular expression the first MaxBody bytes
	// of the answer must match.
	ExpectBody string
	// MaxBody bounds how much of the answer is read. Default 64 KiB.
	MaxBody int64
	// Interval between checks of one address. Default 10s.
	Interval time.Duration
	// Jitter spreads checks: each wait is Interval ± Jitter/2, and the first
	// check comes within Jitter of the start. Default Interval/10; negative
	// for none.
	Jitter time.Duration
	// Timeout of one check. Default 5s, and never more than Interval.
	Timeout time.Duration
	// Rise is how many passes in a row make an unhealthy upstream healthy;
	// Fall how many failures in a row make a healthy one unhealthy.
	// Default 2 each.
	Rise, Fall int
	// Transport sends HTTP checks; give it the proxy's own so checks see
	// the same TLS, HTTP/2 and dial settings as traffic. Default
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Dialer opens TCP checks. Default a net.Dialer.
	Dialer Dialer
}

// defaultDialer is shared so that pools relying on the default still share
// checkers (the dialer is part of a check's identity).
var defaultDialer = &net.Dialer{}

// activeCheck is ActiveHealth validated, with defaults and compiled parts.
type activeCheck struct {
	ActiveHealth
	body *regexp.Regexp
	key  string
}

func (c ActiveHealth) compile() (*activeCheck, error) {
	if c.Method == "" {
		c.Method = http.MethodGet
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if len(c.ExpectStatus) == 0 {
		c.ExpectStatus = Statuses{2}
	}
	if c.MaxBody == 0 {
		c.MaxBody = 64 << 10
	}
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if c.Jitter == 0 {
		c.Jitter = c.Interval / 10
	}
	if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	c.Timeout = min(c.Timeout, c.Interval)
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 2
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
	if c.Dialer == nil {
		c.Dialer = defaultDialer
	}
	switch {
	case strings.ContainsAny(c.Method, " \t\r\n"):
		return nil, fmt.Errorf("active health: method %q: must be an HTTP method token such as GET or HEAD", c.Method)
	case c.Path[0] != '/':
		return nil, fmt.Errorf("active health: path %q: must start with /", c.Path)
	case c.Port < 0 || c.Port > 65535:
		return nil, fmt.Errorf("active health: port %d: must be 1 to 65535, or 0 for the upstream's own", c.Port)
	case c.Interval < 0:
		return nil, fmt.Errorf("active health: interval %v: must be positive", c.Interval)
	case c.Jitter > c.Interval:
		return nil, fmt.Errorf("active health: jitter %v: must not exceed interval %v", c.Jitter, c.Interval)
	case c.Timeout < 0:
		return nil, fmt.Errorf("active health: timeout %v: must be positive", c.Timeout)
	case c.MaxBody < 0:
		return nil, fmt.Errorf("active health: max_body %d: must be positive", c.MaxBody)
	case c.Rise < 1 || c.Fall < 1:
		return nil, fmt.Errorf("active health: rise %d / fall %d: must be at least 1", c.Rise, c.Fall)
	}
	if err := c.ExpectStatus.validate("active health: expect_status"); err != nil {
		return nil, err
	}
	ac := &activeCheck{ActiveHealth: c}
	if c.ExpectBody != "" {
		re, err := regexp.Compile(c.ExpectBody)
		if err != nil {
			return nil, fmt.Errorf("active health: expect_body: %v", err)
		}
		ac.body = re
	}
	// Headers in a stable order so equal settings give equal keys.
	var hdr []string
	for k, vs := range c.Header {
		hdr = append(hdr, k+"="+strings.Join(vs, "\x00"))
	}
	slices.Sort(hdr)
	ac.key = fmt.Sprintf("%t|%s|%s|%s|%q|%d|%s|%q|%d|%d|%d|%d|%d|%d|%p|%p",
		c.TCP, c.Method, c.Path, c.Host, hdr, c.Port, c.ExpectStatus, c.ExpectBody, c.MaxBody,
		c.Interval, c.Jitter, c.Timeout, c.Rise, c.Fall, c.Transport, c.Dialer)
	return ac, nil
}

// checker probes one address with one check on its own goroutine.
type checker struct {
	cfg    *activeCheck
	h      *host
	key    string
	target string // host:port to probe
	url    string
	refs   int // guarded by the Registry mutex

	healthy atomic.Bool

	mu       sync.Mutex
	subs     map[*Upstream]struct{} // members to flag when the verdict changes
	okRun    int                    // passes in a row
	failRun  int                    // failures in a row
	checks   uint64
	last     time.Time
	lastErr  string
	lastFail time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

func newChecker(h *host, scheme string, cfg *activeCheck, key string) *checker {
	c := &checker{cfg: cfg, h: h, key: key, target: h.addr, subs: map[*Upstream]struct{}{}}
	if cfg.Port != 0 {
		hostPart, _, err := net.SplitHostPort(h.addr)
		if err != nil {
			hostPart = h.addr
		}
		c.target = net.JoinHostPort(hostPart, strconv.Itoa(cfg.Port))
	}
	if scheme == "" {
		scheme = "http"
	}
	c.url = scheme + "://" + c.target + cfg.Path
	// Optimistic until the first checks say otherwise: a proxy restart must
	// not turn every upstream away for a whole interval.
	c.healthy.Store(true)
	return c
}

func (c *checker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.done = make(chan struct{})
	go c.run(ctx)
}

// stop ends the checker and waits for its goroutine, including a check in
// progress (which the cancel aborts).
func (c *checker) stop() {
	c.cancel()
	<-c.done
}

func (c *checker) run(ctx context.Context) {
	defer close(c.done)
	t := time.NewTimer(jitter(0, c.cfg.Jitter))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.check(ctx)
		if ctx.Err() != nil {
			return // stopped mid-check: the result means nothing
		}
		c.report(err)
		t.Reset(jitter(c.cfg.Interval-c.cfg.Jitter/2, c.cfg.Jitter))
	}
}

// jitter returns base plus a random duration in [0, spread).
func jitter(base, spread time.Duration) time.Duration {
	if spread > 0 {
		base += rand.N(spread)
	}
	return max(base, 0)
}

func (c *checker) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if c.cfg.TCP {
		conn, err := c.cfg.Dialer.DialContext(ctx, "tcp", c.target)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, c.cfg.Method, c.url, nil)
	if err != nil {
		return err
	}
	for k, vs := range c.cfg.Header {
		req.Header[k] = slices.Clone(vs)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "sluice-health-check")
	}
	if c.cfg.Host != "" {
		req.Host = c.cfg.Host
	}
	resp, err := c.cfg.Transport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, c.cfg.MaxBody)
	// Drain what we allow ourselves to read so the connection can be reused.
	defer func() { _, _ = io.Copy(io.Discard, body) }()
	if !c.cfg.ExpectStatus.Match(resp.StatusCode) {
		return fmt.Errorf("status %d, want %s", resp.StatusCode, c.cfg.ExpectStatus)
	}
	if c.cfg.body != nil {
		b, err := io.ReadAll(body)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		if !c.cfg.body.Match(b) {
			return errors.New("body does not match " + strconv.Quote(c.cfg.ExpectBody))
		}
	}
	return nil
}

// report counts one result; the state flips only after Rise passes or Fall
// failures in a row.
func (c *checker) report(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	c.last = time.Now()
	if err != nil {
		c.failRun++
		c.okRun = 0
		c.lastErr = err.Error()
		c.lastFail = c.last
		if c.failRun >= c.cfg.Fall && c.healthy.Load() {
			c.healthy.Store(false)
			for m := range c.subs {
				m.state.Or(stFailing)
			}
		}
		return
	}
	c.okRun++
	c.failRun = 0
	if c.okRun >= c.cfg.Rise && !c.healthy.Load() {
		c.healthy.Store(true)
		for m := range c.subs {
			m.state.And(^stFailing)
		}
		c.h.markRecovered()
	}
}

// subscribe makes m follow this checker's verdict.
func (c *checker) subscribe(m *Upstream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs[m] = struct{}{}
	if !c.healthy.Load() {
		m.state.Or(stFailing)
	}
}

func (c *checker) unsubscribe(m *Upstream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.subs, m)
}

// ActiveStatus is the active-health part of UpstreamStatus.
type ActiveStatus struct {
	Healthy bool `json:"healthy"`
	// Check is what is probed, e.g. "GET http://10.0.0.1:8080/health".
	Check  string `json:"check"`
	Checks uint64 `json:"checks"`
	// Passes and Fails in a row, counted towards Rise and Fall.
	Passes    int        `json:"passes"`
	Fails     int        `json:"fails"`
	LastCheck *time.Time `json:"last_check,omitempty"`
	// LastError is the most recent failure's reason, and LastFailure its
	// time, kept after later passes.
	LastError   string     `json:"last_error,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
}

func (c *checker) status() *ActiveStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &ActiveStatus{
		Healthy: c.healthy.Load(), Checks: c.checks,
		Passes: c.okRun, Fails: c.failRun, LastError: c.lastErr,
	}
	if c.cfg.TCP {
		st.Check = "tcp " + c.target
	} else {
		st.Check = c.cfg.Method + " " + c.url
	}
	st.LastCheck, st.LastFailure = timeOrNil(c.last), timeOrNil(c.lastFail)
	return st
}
