package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
)

func TestParseMix(t *testing.T) {
	m, err := parseMix("get=1, ws=2,POST=3")
	if err != nil || m != (mix{kGet: 1, kWS: 2, kPost: 3}) {
		t.Fatalf("got %v, %v", m, err)
	}
	for _, bad := range []string{"", "get", "get=-1", "head=1", "get=0"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
}

func TestParseFlagsRefusesAllDisrupted(t *testing.T) {
	if _, err := parseFlags([]string{"-max-disrupted", "3"}); err == nil {
		t.Fatal("-max-disrupted 3 accepted: chaos could take every upstream down")
	}
}

func testBackend(t *testing.T) (*backend, *registry) {
	t.Helper()
	reg := newRegistry()
	block := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	b := newBackend(0, 1, reg, block, log.New(io.Discard, "", 0))
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.kill() })
	return b, reg
}

func get(t *testing.T, c *http.Client, url string, id int) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-Request-Id", fmt.Sprint(id))
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A kill resets streams in flight and marks them cut; the port refuses
// connections until a restart listens on it again.
func TestBackendKillRestartSamePort(t *testing.T) {
	b, reg := testBackend(t)
	addr := b.Addr()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	res := get(t, c, "http://"+addr+"/sse?n=100&interval=20", 7)
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "id: 0") {
		t.Fatalf("first line %q, %v", line, err)
	}
	if !b.kill() {
		t.Fatal("kill: backend was not up")
	}
	_, err := io.Copy(io.Discard, br)
	res.Body.Close()
	if err == nil {
		t.Fatal("a killed stream ended cleanly")
	}
	if reg.cutReason(7) == "" {
		t.Fatal("the killed stream was not recorded as cut")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a killed backend: %v, want connection refused", err)
	}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	if b.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", b.Addr(), addr)
	}
	res = get(t, c, "http://"+addr+"/blob?size=100", 8)
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || n != 100 || err != nil {
		t.Fatalf("after restart: %d, %d bytes, %v", res.StatusCode, n, err)
	}
}

// The reset mode reads the request and resets the connection: no response.
func TestBackendResetMode(t *testing.T) {
	b, reg := testBackend(t)
	b.resetUntil.Store(time.Now().Add(time.Minute).UnixNano())
	tr := &http.Transport{DisableKeepAlives: true}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "http://"+b.Addr()+"/upload", strings.NewReader("hello"))
	req.Header.Set("X-Request-Id", "42")
	if res, err := c.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("reset mode answered %s", res.Status)
	}
	if b.connResets.Load() != 1 {
		t.Fatalf("connResets = %d, want 1", b.connResets.Load())
	}
	if n, _ := reg.postSeen(42); n != 1 {
		t.Fatalf("upload recorded %d times, want 1", n)
	}
	if reg.cutReason(42) != "" {
		t.Fatal("a reset before the response counted as a mid-body cut")
	}
}

func quickConfig() config {
	cfg := defaultConfig()
	cfg.duration = 4 * time.Second
	cfg.workers = 6
	cfg.seed = 1
	cfg.chaosMin, cfg.chaosMax = 150*time.Millisecond, 300*time.Millisecond
	cfg.progress = time.Hour
	cfg.settle = 3 * time.Second
	cfg.uploadSize = 256 << 10
	cfg.reqTimeout = 10 * time.Second
	return cfg
}

func runQuick(t *testing.T, cfg config) (int, *report, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a short soak")
	}
	var out bytes.Buffer
	code, r := run(cfg, &out)
	if r == nil {
		t.Fatalf("setup failed:\n%s", out.String())
	}
	return code, r, out.String()
}

// Without chaos every request succeeds and everything passes.
func TestSoakControlRun(t *testing.T) {
	cfg := quickConfig()
	cfg.chaos = false
	code, r, out := runQuick(t, cfg)
	if code != 0 {
		t.Fatalf("control run failed:\n%s", out)
	}
	for k := range nKinds {
		if r.st.get(k, oOK) == 0 || r.st.get(k, oOK) != r.st.total(k) {
			t.Errorf("%s: %d ok of %d", kindNames[k], r.st.get(k, oOK), r.st.total(k))
		}
	}
}

// The harness itself must notice a proxy that hides a broken response
// behind a clean end: here a wrapper swallows the proxy's abort.
func TestSoakCatchesSilentTruncation(t *testing.T) {
	cfg := quickConfig()
	cfg.actions = []string{"midbody"}
	cfg.budgetRatio = 1
	cfg.wrap = func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil && v != http.ErrAbortHandler {
					panic(v)
				}
			}()
			h.ServeHTTP(w, r)
		})
	}
	code, r, out := runQuick(t, cfg)
	if code != 1 || r.st.sum(oSilent, kGet, kSSE) == 0 {
		t.Fatalf("exit %d, %d silent failures; want exit 1 and some:\n%s", code, r.st.sum(oSilent, kGet, kSSE), out)
	}
}

// doublePost is a broken transport that sends every POST twice.
type doublePost struct{ http.RoundTripper }

func (d doublePost) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost {
		return d.RoundTripper.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	send := func() (*http.Response, error) {
		r := req.Clone(req.Context())
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		return d.RoundTripper.RoundTrip(r)
	}
	if res, err := send(); err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	return send()
}

func TestSoakCatchesDuplicateUploads(t *testing.T) {
	cfg := quickConfig()
	cfg.chaos = false
	cfg.mix = mix{kGet: 1, kPost: 1}
	tr := proxy.NewTransport(proxy.TransportOptions{})
	defer tr.CloseIdleConnections()
	cfg.transport = doublePost{tr}
	code, r, out := runQuick(t, cfg)
	if code != 1 || len(r.reg.duplicates()) == 0 {
		t.Fatalf("exit %d, %d duplicates; want exit 1 and some:\n%s", code, len(r.reg.duplicates()), out)
	}
}

// Without retries, killed upstreams turn idempotent requests into 502s,
// and the soak must say so.
func TestSoakCatchesUnretriedFailures(t *testing.T) {
	cfg := quickConfig()
	cfg.actions = []string{"kill"}
	cfg.retries = -1
	code, r, out := runQuick(t, cfg)
	if code != 1 || r.st.sum(oStatus, kGet, kSSE, kWS) == 0 {
		t.Fatalf("exit %d, %d error statuses; want exit 1 and some:\n%s", code, r.st.sum(oStatus, kGet, kSSE, kWS), out)
	}
}
