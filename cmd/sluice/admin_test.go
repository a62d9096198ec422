package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

// startProxyWithAdmin runs `sluice proxy --admin 127.0.0.1:0` in-process and
// returns the proxy's and the admin endpoint's addresses and a function that
// stops it and returns the exit status.
func startProxyWithAdmin(t *testing.T, args ...string) (proxyAddr, adminAddr string, stop func() int) {
	t.Helper()
	adminc := make(chan net.Addr, 1)
	e := env{stdout: io.Discard, adminReady: func(a net.Addr) { adminc <- a }}
	proxyAddr, stop = startProxyEnv(t, e, append([]string{"--admin", "127.0.0.1:0"}, args...)...)
	select {
	case a := <-adminc:
		adminAddr = a.String()
	default:
		t.Fatal("the admin endpoint was not ready before the proxy")
	}
	return proxyAddr, adminAddr, stop
}

func TestProxyAdminEndToEnd(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "up")
	}))
	defer be.Close()
	addr, adminAddr, stop := startProxyWithAdmin(t, "--to", be.URL)
	up := strings.TrimPrefix(be.URL, "http://")

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(url string) (int, string) {
		t.Helper()
		res, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(b)
	}
	for range 2 {
		if code, body := get("http://" + addr + "/"); code != 200 || body != "up" {
			t.Fatalf("through the proxy: %d %q", code, body)
		}
	}

	// Observe runs after the client has its response: scrape until the
	// counts are there, for at most 5s.
	wants := []string{
		`sluice_requests_total{code="200",method="GET"} 2`,
		`sluice_upstream_requests_total{code="200",upstream="` + up + `"} 2`,
		`sluice_upstream_attempts_total{upstream="` + up + `"} 2`,
		`sluice_upstream_healthy{upstream="` + up + `"} 1`,
		`sluice_request_duration_seconds_count{code_class="2xx"} 2`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	}
	var metrics string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, body := get("http://" + adminAddr + "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		metrics = body
		missing := ""
		for _, w := range wants {
			if !strings.Contains(metrics, "\n"+w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s after 5s:\n%s", missing, metrics)
		}
	}

	code, body := get("http://" + adminAddr + "/status")
	var st upstream.PoolStatus
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/status: %d %v\n%s", code, err, body)
	}
	if len(st.Upstreams) != 1 || st.Upstreams[0].Addr != up || !st.Upstreams[0].Healthy ||
		st.Upstreams[0].Passive == nil { // passive health is on by default
		t.Fatalf("/status: %s", body)
	}

	tr.CloseIdleConnections()
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if c, err := net.DialTimeout("tcp", adminAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the admin endpoint still accepts after the proxy stopped")
	}
}

func TestProxyAdminListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, stderr := runCmd(t, "proxy", "--from", "127.0.0.1:0", "--to", "127.0.0.1:9", "--admin", ln.Addr().String())
	want := "sluice proxy: --admin " + ln.Addr().String() + ": listen: address already in use"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("exit %d, stderr %q, want it to contain %q", code, stderr, want)
	}
}

func TestChainObserve(t *testing.T) {
	var got []string
	a := func(s proxy.Summary) { got = append(got, "a "+s.Method) }
	b := func(s proxy.Summary) { got = append(got, "b "+s.Method) }
	chainObserve(nil, b)(proxy.Summary{Method: "GET"})
	chainObserve(a, b)(proxy.Summary{Method: "PUT"})
	if strings.Join(got, ",") != "b GET,a PUT,b PUT" {
		t.Fatalf("calls: %q", got)
	}
}
