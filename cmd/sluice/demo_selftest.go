package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// selfTest walks the tour against the running demo and prints one line per
// step. It returns errSelfTest when a step failed.
func (d *demo) selfTest(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := "http://" + d.ln.Addr().String()

	steps := []struct {
		name string
		run  func() (string, error)
	}{
		{"load balancing", func() (string, error) { return d.stepBalance(ctx, c, base) }},
		{"server-sent events", func() (string, error) { return d.stepSSE(ctx, c, base) }},
		{"websocket echo", func() (string, error) { return d.stepWS() }},
		{"status passthrough", func() (string, error) { return d.stepStatus(ctx, c, base) }},
		{"retry around a stopped backend", func() (string, error) { return d.stepRetry(ctx, c, base) }},
		{"metrics", func() (string, error) { return d.stepMetrics(ctx, c) }},
	}
	failed := 0
	for _, s := range steps {
		detail, err := s.run()
		if err != nil {
			failed++
			fmt.Fprintf(w, "FAIL  %s: %v\n", s.name, err)
			continue
		}
		fmt.Fprintf(w, "ok    %s: %s\n", s.name, detail)
	}
	if failed > 0 {
		fmt.Fprintf(w, "self-test: %d of %d steps failed\n", failed, len(steps))
		return errSelfTest
	}
	fmt.Fprintf(w, "self-test: all %d steps passed\n", len(steps))
	return nil
}

// getBody GETs url and returns status and body.
func getBody(ctx context.Context, c *http.Client, method, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, "", err
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, string(b), err
}

func (d *demo) stepBalance(ctx context.Context, c *http.Client, base string) (string, error) {
	seen := map[string]int{}
	for range 6 {
		code, body, err := getBody(ctx, c, "GET", base+"/")
		if err != nil {
			return "", err
		}
		if code != 200 || !strings.HasPrefix(body, "hello from backend-") {
			return "", fmt.Errorf("got %d %q", code, body)
		}
		seen[strings.TrimSpace(strings.TrimPrefix(body, "hello from "))]++
	}
	if len(seen) != 3 {
		return "", fmt.Errorf("6 requests reached %d backends (%v), want all 3", len(seen), seen)
	}
	names := make([]string, 0, len(seen))
	for n, k := range seen {
		names = append(names, fmt.Sprintf("%s×%d", n, k))
	}
	sort.Strings(names)
	return "6 requests went to " + strings.Join(names, ", "), nil
}

func (d *demo) stepSSE(ctx context.Context, c *http.Client, base string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/sse", nil)
	if err != nil {
		return "", err
	}
	// No client timeout: the stream lasts ten seconds; ctx bounds the wait.
	t0 := time.Now()
	res, err := (&http.Client{Transport: c.Transport}).Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "text/event-stream" {
		return "", fmt.Errorf("got %d %q", res.StatusCode, ct)
	}
	sc := bufio.NewScanner(res.Body)
	for i := 0; i < 10 && sc.Scan(); i++ {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if !strings.HasPrefix(data, "tick 1 of") {
				return "", fmt.Errorf("first event %q", data)
			}
			// The stream is still open: the event arrived because it was
			// flushed, not because the body ended.
			return fmt.Sprintf("first event %q within %v, stream still open", data, time.Since(t0).Round(time.Millisecond)), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no event in the stream")
}

func (d *demo) stepWS() (string, error) {
	conn, br, err := wsDial(d.ln.Addr().String(), "/ws", 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	msg := "hello through sluice"
	if err := wsframe.Write(conn, wsframe.OpText, true, []byte(msg), true); err != nil {
		return "", err
	}
	op, _, got, err := wsRead(br, false)
	if err != nil {
		return "", err
	}
	if op != wsframe.OpText || string(got) != msg {
		return "", fmt.Errorf("echo: opcode %d %q", op, got)
	}
	wsframe.Write(conn, wsframe.OpClose, true, []byte{0x03, 0xe8}, true) // 1000 normal closure
	if op, _, _, err := wsRead(br, false); err != nil || op != wsframe.OpClose {
		return "", fmt.Errorf("close handshake: opcode %d, %v", op, err)
	}
	return fmt.Sprintf("101, then %q echoed and closed cleanly", msg), nil
}

func (d *demo) stepStatus(ctx context.Context, c *http.Client, base string) (string, error) {
	code, body, err := getBody(ctx, c, "GET", base+"/status/503")
	if err != nil {
		return "", err
	}
	if code != 503 || !strings.HasPrefix(body, "status 503 from backend-") {
		return "", fmt.Errorf("got %d %q", code, body)
	}
	return "upstream 503 reached the client as it was", nil
}

func (d *demo) stepRetry(ctx context.Context, c *http.Client, base string) (string, error) {
	ctl := "http://" + d.ctlAddr + "/backends/backend-2/"
	if code, body, err := getBody(ctx, c, "POST", ctl+"stop"); err != nil || code != 200 {
		return "", fmt.Errorf("stopping backend-2: %d %q %v", code, body, err)
	}
	before := d.retried.Load()
	for range 6 {
		code, body, err := getBody(ctx, c, "GET", base+"/")
		if err != nil {
			return "", err
		}
		if code != 200 || strings.Contains(body, "backend-2") {
			return "", fmt.Errorf("with backend-2 stopped: got %d %q", code, body)
		}
	}
	retried := d.retried.Load() - before
	if retried == 0 {
		return "", fmt.Errorf("6 requests with backend-2 stopped, none needed a second attempt")
	}
	if code, body, err := getBody(ctx, c, "POST", ctl+"start"); err != nil || code != 200 {
		return "", fmt.Errorf("starting backend-2: %d %q %v", code, body, err)
	}
	for range 6 {
		_, body, err := getBody(ctx, c, "GET", base+"/")
		if err != nil {
			return "", err
		}
		if strings.Contains(body, "backend-2") {
			return fmt.Sprintf("6 of 6 answered with backend-2 stopped (%d retried); backend-2 back after restart", retried), nil
		}
	}
	return "", fmt.Errorf("backend-2 restarted but got no request")
}

// stepMetrics reads the control listener's /metrics after the steps above:
// their requests are counted, and so are the retries around backend-2.
func (d *demo) stepMetrics(ctx context.Context, c *http.Client) (string, error) {
	// Observe runs after the client has its response; give the last
	// request a moment to be counted.
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, b, err := getBody(ctx, c, "GET", "http://"+d.ctlAddr+"/metrics")
		if err != nil {
			return "", err
		}
		if code != 200 {
			return "", fmt.Errorf("/metrics: %d", code)
		}
		body = b
		if metricValue(body, `sluice_requests_total{code="503",method="GET"}`) == "1" &&
			metricValue(body, "sluice_retries_total") != "0" && metricValue(body, "sluice_retries_total") != "" {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("/metrics lacks the tour's requests and retries:\n%s", body)
		}
	}
	return fmt.Sprintf("/metrics counted %s GET 200s, the 503 and %s retries",
		metricValue(body, `sluice_requests_total{code="200",method="GET"}`), metricValue(body, "sluice_retries_total")), nil
}

// metricValue returns the value of a series in the text format, "" if absent.
func metricValue(text, series string) string {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
