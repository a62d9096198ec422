package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeText(w io.Writer, mf *dto.MetricFamily) error {
	_, err := expfmt.MetricFamilyToText(w, mf)
	return err
}

// stack is a proxy with Metrics wired into Observe and its admin endpoint,
// each on a loopback httptest.Server.
type stack struct {
	proxy, admin *httptest.Server
	pool         *upstream.Pool
	client       *http.Client
}

func newStack(t *testing.T, policy upstream.Selector, retry proxy.RetryPolicy, addrs ...string) *stack {
	t.Helper()
	ups := make([]*upstream.Upstream, len(addrs))
	for i, a := range addrs {
		ups[i] = upstream.New(a)
	}
	pool := upstream.NewPool(policy, ups...)
	m := NewMetrics()
	h, err := proxy.New(proxy.Config{Upstreams: pool, Observe: m.Observe, Retry: retry, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(pool, m)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{proxy: httptest.NewServer(h), admin: httptest.NewServer(a), pool: pool}
	tr := &http.Transport{}
	s.client = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		s.proxy.Close()
		s.admin.Close()
		h.Close()
	})
	return s
}

// do sends one request through the proxy and returns the status and body
// (err when the response broke).
func (s *stack) do(t *testing.T, method, path, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, s.proxy.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	res, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// scrape fetches /metrics over HTTP and parses the text format.
func (s *stack) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := s.client.Get(s.admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %s", res.Status)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the series name{labels} (a counter, gauge or
// a histogram's count), and whether it exists. labels is "k=v,k=v".
func value(mfs map[string]*dto.MetricFamily, name, labels string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	want := map[string]string{}
	if labels != "" {
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			want[k] = v
		}
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

type want struct {
	name, labels string
	v            float64
}

// expect scrapes until every series has its value (Observe runs after the
// client has its response, so counts may lag a moment), for at most 5s.
func (s *stack) expect(t *testing.T, wants ...want) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs := s.scrape(t)
		var bad []string
		for _, w := range wants {
			if v, ok := value(mfs, w.name, w.labels); !ok || v != w.v {
				bad = append(bad, fmt.Sprintf("%s{%s} = %v (present %v), want %v", w.name, w.labels, v, ok, w.v))
			}
		}
		if len(bad) == 0 {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s:\n  %s", strings.Join(bad, "\n  "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hostport(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// refusedAddr is a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func echoBackend(t *testing.T) *httptest.Server {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		io.WriteString(w, "got "+string(b))
	}))
	t.Cleanup(be.Close)
	return be
}

func TestMetricsThroughProxy(t *testing.T) {
	be := echoBackend(t)
	up := hostport(be)
	s := newStack(t, nil, proxy.RetryPolicy{}, up)
	for range 3 {
		if code, body, err := s.do(t, "GET", "/", ""); err != nil || code != 200 || body != "got " {
			t.Fatalf("GET: %d %q %v", code, body, err)
		}
	}
	if code, body, err := s.do(t, "POST", "/", "hello"); err != nil || code != 201 || body != "got hello" {
		t.Fatalf("POST: %d %q %v", code, body, err)
	}
	if code, _, err := s.do(t, "PURGE", "/", ""); err != nil || code != 200 {
		t.Fatalf("PURGE: %d %v", code, err)
	}
	mfs := s.expect(t,
		want{"sluice_requests_total", "method=GET,code=200", 3},
		want{"sluice_requests_total", "method=POST,code=201", 1},
		want{"sluice_requests_total", "method=OTHER,code=200", 1},
		want{"sluice_request_duration_seconds", "code_class=2xx", 5},
		want{"sluice_retries_total", "", 0},
		want{"sluice_aborted_responses_total", "", 0},
		want{"sluice_request_bytes_total", "", 5},
		want{"sluice_response_bytes_total", "", float64(4*len("got ") + len("got hello"))},
		want{"sluice_upstream_requests_total", "upstream=" + up + ",code=200", 4},
		want{"sluice_upstream_requests_total", "upstream=" + up + ",code=201", 1},
		want{"sluice_upstream_response_latency_seconds", "upstream=" + up, 5},
		want{"sluice_upstream_healthy", "upstream=" + up, 1},
		want{"sluice_upstream_inflight", "upstream=" + up, 0},
		want{"sluice_upstream_attempts_total", "upstream=" + up, 5},
		want{"sluice_upstream_failures_total", "upstream=" + up, 0},
		want{"sluice_upstreams", "", 1},
		want{"sluice_upstreams_healthy", "", 1},
	)
	if _, ok := value(mfs, "sluice_requests_total", "method=PURGE,code=200"); ok {
		t.Error("an unknown method became a label value")
	}
	for _, name := range []string{"go_goroutines", "go_gc_duration_seconds", "process_resident_memory_bytes"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
}

func TestMetricsDeadUpstream(t *testing.T) {
	dead := refusedAddr(t)
	s := newStack(t, nil, proxy.RetryPolicy{Retries: -1}, dead)
	for range 2 {
		if code, _, err := s.do(t, "GET", "/", ""); err != nil || code != 502 {
			t.Fatalf("GET: %d %v", code, err)
		}
	}
	s.expect(t,
		want{"sluice_requests_total", "method=GET,code=502", 2},
		want{"sluice_request_duration_seconds", "code_class=5xx", 2},
		want{"sluice_upstream_requests_total", "upstream=" + dead + ",code=502", 2},
		want{"sluice_upstream_attempts_total", "upstream=" + dead, 2},
		want{"sluice_upstream_failures_total", "upstream=" + dead, 2},
		want{"sluice_retries_total", "", 0},
	)
	mfs := s.scrape(t)
	if _, ok := value(mfs, "sluice_upstream_response_latency_seconds", "upstream="+dead); ok {
		t.Error("an upstream that never answered has a response latency")
	}
}

func TestMetricsRetry(t *testing.T) {
	be := echoBackend(t)
	live, dead := hostport(be), refusedAddr(t)
	s := newStack(t, upstream.First{}, proxy.RetryPolicy{Retries: 1}, dead, live)
	if code, _, err := s.do(t, "GET", "/", ""); err != nil || code != 200 {
		t.Fatalf("GET: %d %v", code, err)
	}
	s.expect(t,
		want{"sluice_requests_total", "method=GET,code=200", 1},
		want{"sluice_retries_total", "", 1},
		want{"sluice_upstream_requests_total", "upstream=" + live + ",code=200", 1},
		want{"sluice_upstream_attempts_total", "upstream=" + dead, 1},
		want{"sluice_upstream_failures_total", "upstream=" + dead, 1},
		want{"sluice_upstream_attempts_total", "upstream=" + live, 1},
		want{"sluice_upstream_failures_total", "upstream=" + live, 0},
	)
	mfs := s.scrape(t)
	if _, ok := value(mfs, "sluice_upstream_requests_total", "upstream="+dead+",code=200"); ok {
		t.Error("the failed first attempt's upstream was credited with the response")
	}
}

func TestMetricsAbortedAndClientGone(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/truncated":
			// promise 100 bytes, send 10, hang up
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			brw.Flush()
			conn.Close()
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
	}))
	defer be.Close()
	defer close(release)
	up := hostport(be)
	s := newStack(t, nil, proxy.RetryPolicy{Retries: -1}, up)

	if _, _, err := s.do(t, "GET", "/truncated", ""); err == nil {
		t.Fatal("a truncated body read as complete")
	}
	// a client that gives up: 499
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.proxy.URL+"/hang", nil)
	if res, err := s.client.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("the hanging request got a response")
	}
	s.expect(t,
		want{"sluice_aborted_responses_total", "", 1},
		want{"sluice_requests_total", "method=GET,code=200", 1},
		want{"sluice_requests_total", "method=GET,code=499", 1},
		want{"sluice_response_bytes_total", "", 10},
		want{"sluice_upstream_requests_total", "upstream=" + up + ",code=499", 1},
	)
}

func TestAdminRoutes(t *testing.T) {
	be := echoBackend(t)
	s := newStack(t, nil, proxy.RetryPolicy{}, hostport(be))
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.admin.URL+path, nil)
		res, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/metrics", 200, ""},
		{"HEAD", "/metrics", 200, ""},
		{"GET", "/status", 200, ""},
		{"GET", "/", 404, ""},
		{"GET", "/metrics/", 404, ""},
		{"POST", "/nope", 404, ""},
		{"POST", "/metrics", 405, "GET, HEAD"},
		{"DELETE", "/status", 405, "GET, HEAD"},
	} {
		res, _ := do(tc.method, tc.path)
		if res.StatusCode != tc.code || res.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d %q", tc.method, tc.path, res.StatusCode, res.Header.Get("Allow"), tc.code, tc.allow)
		}
	}

	res, body := do("GET", "/status")
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/status Content-Type %q", ct)
	}
	var st upstream.PoolStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	if st.Policy != "round_robin" || st.Healthy != 1 || len(st.Upstreams) != 1 || st.Upstreams[0].Addr != hostport(be) {
		t.Fatalf("/status: %s", body)
	}
}

// TestAdminWithoutPoolOrMetrics: New accepts nils (a library user may want
// only one half).
func TestAdminWithoutPoolOrMetrics(t *testing.T) {
	a, err := New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	for path, code := range map[string]int{"/metrics": 200, "/status": 404} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != code {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, code)
		}
		if path == "/metrics" && (!strings.Contains(string(b), "go_goroutines") || strings.Contains(string(b), "sluice_")) {
			t.Errorf("/metrics:\n%s", b)
		}
	}
	srv.CloseClientConnections()
}

func TestServeShutsDownWithContext(t *testing.T) {
	a, err := New(nil, NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, a, nil) }()

	// a keep-alive connection stays open until shutdown
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %s", res.Status)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection after shutdown: %v, want EOF", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after shutdown")
	}
}
