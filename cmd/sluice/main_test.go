package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" { // the test binary as sluice itself (runMainProcess)
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

const runMainEnv = "SLUICE_TEST_RUN_MAIN"

// syncBuffer is a bytes.Buffer safe for the server's goroutines to write
// while the test reads.
type syncBuffer = testkit.LockedBuffer

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	code = run(context.Background(), args, env{stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

func TestRunExitCodesAndMessages(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		stdout     string // substring
		stderr     string // exact
		stderrPart string // substring
	}{
		{args: nil, code: 2, stderrPart: "Usage:"},
		{args: []string{"help"}, code: 0, stdout: "sluice proxy --to HOST:PORT"},
		{args: []string{"--help"}, code: 0, stdout: "Usage:"},
		{args: []string{"help", "proxy"}, code: 0, stdout: "--max-request-buffer BYTES"},
		{args: []string{"help", "demo"}, code: 0, stdout: "--self-test"},
		{args: []string{"help", "nope"}, code: 2, stderrPart: `unknown command "nope"`},
		{args: []string{"version"}, code: 0, stdout: "sluice dev (go1."},
		{args: []string{"version", "--help"}, code: 0, stdout: "Usage: sluice version"},
		{args: []string{"version", "x"}, code: 2, stderr: "sluice version: unexpected argument \"x\"\nRun 'sluice version --help' for usage.\n"},
		{args: []string{"proxy", "--help"}, code: 0, stdout: "Usage: sluice proxy"},
		{args: []string{"proxy", "--to", "a:1", "--retries", "x"}, code: 2,
			stderr: "sluice proxy: --retries \"x\": want a whole number >= 0\nRun 'sluice proxy --help' for usage.\n"},
		{args: []string{"proxy"}, code: 2,
			stderr: "sluice proxy: --to is required: give at least one upstream, e.g. --to 127.0.0.1:9000\nRun 'sluice proxy --help' for usage.\n"},
		{args: []string{"demo", "--from", "x"}, code: 2,
			stderr: "sluice demo: --from \"x\": want host:port to listen on, such as :8080 or 127.0.0.1:8080\nRun 'sluice demo --help' for usage.\n"},
		{args: []string{"demo", "--self-test=perhaps"}, code: 2,
			stderr: "sluice demo: --self-test \"perhaps\": want true or false (or just --self-test)\nRun 'sluice demo --help' for usage.\n"},
		{args: []string{"demo", "-h"}, code: 0, stdout: "Usage: sluice demo"},
		{args: []string{"serve"}, code: 2,
			stderr: "sluice: unknown command \"serve\"; commands are proxy, demo, version and help\nRun 'sluice help' for usage.\n"},
		{args: []string{"--to", "a:1"}, code: 2, stderrPart: "--to needs a command before it, e.g. sluice proxy --to"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tc.stdout)
			}
			if tc.stderr != "" && stderr != tc.stderr {
				t.Errorf("stderr\n got %q\nwant %q", stderr, tc.stderr)
			}
			if !strings.Contains(stderr, tc.stderrPart) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.stderrPart)
			}
		})
	}
}

func TestProxyHelpListsEveryFlag(t *testing.T) {
	_, stdout, _ := runCmd(t, "proxy", "--help")
	for _, f := range proxyFlags {
		if !strings.Contains(stdout, "--"+f.name+" ") && !strings.Contains(stdout, "--"+f.name+"\n") {
			t.Errorf("--help does not list --%s", f.name)
		}
	}
}

// TestDocsListEveryFlag keeps README.md and docs/cli.md in step with the
// flags the command accepts.
func TestDocsListEveryFlag(t *testing.T) {
	for _, doc := range []string{"../../README.md", "../../docs/cli.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range proxyFlags {
			if !strings.Contains(string(b), "`--"+f.name) {
				t.Errorf("%s does not document --%s", doc, f.name)
			}
		}
		for _, p := range lbPolicyNames() {
			if !strings.Contains(string(b), "`"+p+"`") {
				t.Errorf("%s does not list --lb-policy %s", doc, p)
			}
		}
	}
}

// startProxy runs `sluice proxy` in-process on a free loopback port and
// returns its address and a function that stops it and returns the exit
// status.
func startProxy(t *testing.T, stdout io.Writer, args ...string) (string, func() int) {
	t.Helper()
	return startProxyEnv(t, env{stdout: stdout}, args...)
}

// startProxyEnv is startProxy with more of the env set by the caller
// (ready is its own, and stderr too unless the caller sets it).
func startProxyEnv(t *testing.T, e env, args ...string) (string, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	stderr, _ := e.stderr.(*syncBuffer)
	if e.stderr == nil {
		stderr = new(syncBuffer)
		e.stderr = stderr
	}
	e.ready = func(a net.Addr) { addrc <- a }
	go func() {
		done <- run(ctx, append([]string{"proxy", "--from", "127.0.0.1:0"}, args...), e)
	}()
	var addr string
	select {
	case a := <-addrc:
		addr = a.String()
	case code := <-done:
		cancel()
		t.Fatalf("proxy exited with %d before listening: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("proxy did not start listening within 10s")
	}
	var once sync.Once
	code := -1
	stop := func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Error("proxy did not stop within 20s")
			}
			if code != 0 {
				t.Logf("proxy stderr: %s", stderr.String())
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func TestProxyEndToEnd(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "backend")
		io.WriteString(w, "hello "+r.URL.RequestURI()+" env="+r.Header.Get("X-Env")+" xff="+r.Header.Get("X-Forwarded-For"))
	}))
	defer be.Close()
	var access syncBuffer
	addr, stop := startProxy(t, &access, "--to", be.URL, "--access-log", "-",
		"--header-up", "X-Env: test", "--header-down", "-Server")

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	res, err := c.Get("http://" + addr + "/path?q=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "hello /path?q=1 env=test xff=127.0.0.1" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if s := res.Header.Get("Server"); s != "" {
		t.Fatalf("--header-down -Server left Server: %q", s)
	}
	tr.CloseIdleConnections()
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// One JSON access line with the documented fields.
	sc := bufio.NewScanner(strings.NewReader(access.String()))
	if !sc.Scan() {
		t.Fatal("no access line")
	}
	var line map[string]any
	if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
		t.Fatalf("access line %q: %v", sc.Text(), err)
	}
	for _, k := range []string{"time", "level", "msg", "method", "uri", "status", "upstream", "attempts", "bytes_in", "bytes_out", "duration", "upstream_latency"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access line lacks %q: %s", k, sc.Text())
		}
	}
	if line["uri"] != "/path?q=1" || line["status"] != float64(200) || line["upstream"] != strings.TrimPrefix(be.URL, "http://") {
		t.Errorf("access line %s", sc.Text())
	}
}

func TestProxyEndToEndRetryAndH2C(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "up")
	}))
	defer be.Close()
	// A port nobody listens on: attempts there fail to dial and are retried.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	logFile := filepath.Join(t.TempDir(), "access.log")
	addr, stop := startProxy(t, io.Discard, "--to", deadAddr, "--to", be.URL, "--h2c", "--access-log", logFile)

	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for i := range 4 {
		res, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "up" || res.ProtoMajor != 2 {
			t.Fatalf("request %d: %d %s %q", i, res.StatusCode, res.Proto, b)
		}
	}
	tr.CloseIdleConnections()
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "\n"); n != 4 {
		t.Fatalf("%d access lines in the file, want 4:\n%s", n, log)
	}
	if !strings.Contains(string(log), `"attempts":2`) || !strings.Contains(string(log), `"proto":"HTTP/2.0"`) {
		t.Fatalf("want a retried request over HTTP/2 in the log:\n%s", log)
	}
}

func TestProxyListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, stderr := runCmd(t, "proxy", "--from", ln.Addr().String(), "--to", "127.0.0.1:9")
	if code != 1 || !strings.Contains(stderr, "sluice proxy: listen on "+ln.Addr().String()+": address already in use") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestProxyTLSFileError(t *testing.T) {
	code, _, stderr := runCmd(t, "proxy", "--from", "127.0.0.1:0", "--to", "127.0.0.1:9",
		"--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem")
	if code != 1 || !strings.Contains(stderr, "/nonexistent/cert.pem") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestDemoSelfTest(t *testing.T) {
	code, stdout, stderr := runCmd(t, "demo", "--self-test")
	if code != 0 || !strings.Contains(stdout, "self-test: all 6 steps passed") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestDemoPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, stderr := runCmd(t, "demo", "--from", ln.Addr().String())
	want := "sluice demo: " + ln.Addr().String() + " is already in use; pick another address, e.g. sluice demo --from 127.0.0.1:8081\n"
	if code != 1 || stderr != want {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestDemoRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--from", "127.0.0.1:0"}, env{stdout: &out, stderr: &errb, ready: func(a net.Addr) { addrc <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("demo did not start")
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	tr.CloseIdleConnections()
	// A WebSocket open at shutdown is closed by it (proxy.Handler.Close).
	ws, br, err := wsDial(addr.String(), "/ws", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	cancel()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, _, err := wsRead(br, false); err == nil {
		t.Fatal("read a frame from a WebSocket nobody wrote to")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("WebSocket still open 10s after shutdown began")
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop")
	}
	for _, want := range []string{"for i in 1 2 3; do curl -s http://" + addr.String() + "/; done", "curl -N http://", "Sec-WebSocket-Key", "/backends/backend-2/stop", "msg=access"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// An access log that cannot be written is reported on the process log,
// once, while the requests it describes are answered as usual.
func TestProxyAccessLogWriteFailureReported(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	for _, buffer := range []string{"64KiB", "0"} {
		t.Run("buffer="+buffer, func(t *testing.T) {
			full := &writeRecorder{err: errors.New("no space left on device")}
			var stderr syncBuffer
			addr, stop := startProxyEnv(t, env{stdout: full, stderr: &stderr},
				"--to", be.URL, "--access-log", "-", "--access-log-buffer", buffer)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			getEachOK(t, c, "http://"+addr+"/", 3, "ok")
			tr.CloseIdleConnections()
			if code := stop(); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			logs := stderr.String()
			if n := strings.Count(logs, "access log: write failed"); n != 1 {
				t.Fatalf("%d reports of the failing access log, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs, "no space left on device") {
				t.Fatalf("the report does not say what failed:\n%s", logs)
			}
			if got := strings.Count(strings.Join(full.all(), ""), "\n"); got != 3 {
				t.Fatalf("%d access lines attempted, want 3", got)
			}
		})
	}
}

// A closed pipe on standard output does not end the server: the access
// log's write fails, the process log says so, and requests are answered.
// Run as a process of its own, since what is tested is main's signal setup.
func TestProxySurvivesClosedStdoutPipe(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR.Close() // the reader is gone before the first access line
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "proxy", "--from", "127.0.0.1:0", "--to", be.URL,
		"--access-log", "-", "--access-log-buffer", "0", "--log-format", "json")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdoutW.Close()
	stderrW.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	// The process log, line by line: the listening address, then reports.
	lines := make(chan map[string]any)
	testDone := make(chan struct{})
	defer close(testDone)
	go func() {
		defer stderrR.Close()
		defer close(lines)
		sc := bufio.NewScanner(stderrR)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			select {
			case lines <- m:
			case <-testDone: // read on to EOF, so the process never blocks on its log
			}
		}
	}()
	next := func(msg string) map[string]any {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("process log ended before %q (exit: %v)", msg, cmd.ProcessState)
				}
				if m["msg"] == msg {
					return m
				}
			case <-timeout:
				t.Fatalf("no %q in the process log within 10s", msg)
			}
		}
	}
	addr, _ := next("listening")["addr"].(string)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	getEachOK(t, c, "http://"+addr+"/", 3, "ok") // after the pipe closed
	report := next("access log: write failed; access lines are lost until it works again")
	if e, _ := report["err"].(string); !strings.Contains(e, "broken pipe") {
		t.Errorf("the report says %q, want the broken pipe", e)
	}
	tr.CloseIdleConnections()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred Kill's wait
		if err != nil {
			t.Fatalf("sluice exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sluice did not stop within 20s of SIGTERM")
	}
}

// getEachOK makes n GETs of url and fails the test unless each is a 200
// with body want.
func getEachOK(t *testing.T, c *http.Client, url string, n int, want string) {
	t.Helper()
	for i := range n {
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, res.StatusCode, b, want)
		}
	}
}
