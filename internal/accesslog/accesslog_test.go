package accesslog_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/accesslog"
	"github.com/sluiceproxy/sluice/internal/testkit"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// jsonLines parses what buf holds, one JSON object a line.
func jsonLines(t *testing.T, buf *testkit.LockedBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// The line is the one slog's JSON handler writes for the proxy's own
// Config.AccessLog: same fields, same JSON types, same values.
func TestSameLineAsSlog(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello")
	}))
	defer be.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	var viaSlog, viaUs testkit.LockedBuffer
	lg := accesslog.New(&viaUs)
	pool := upstream.NewPool(nil, upstream.New(strings.TrimPrefix(be.URL, "http://")))
	h, err := proxy.New(proxy.Config{
		Upstreams: pool,
		AccessLog: slog.New(slog.NewJSONHandler(&viaSlog, nil)),
		Observe:   lg.Log,
	})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	defer func() { px.Close(); h.Close() }()
	deadPool := upstream.NewPool(nil, upstream.New(deadAddr))
	hd, err := proxy.New(proxy.Config{
		Upstreams: deadPool,
		AccessLog: slog.New(slog.NewJSONHandler(&viaSlog, nil)),
		Observe:   lg.Log,
		Retry:     proxy.RetryPolicy{Retries: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	pxd := httptest.NewServer(hd)
	defer func() { pxd.Close(); hd.Close() }()

	send := func(method, url, body string) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Host = `we"ird\host<&>`
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	send("GET", px.URL+"/a%20b?q=\"x\"&é=1", "")
	send("POST", px.URL+"/up", "twelve bytes")
	send("GET", pxd.URL+"/dead", "")
	http.DefaultClient.CloseIdleConnections()

	deadline := time.Now().Add(5 * time.Second)
	var a, b []map[string]any
	for time.Now().Before(deadline) {
		a, b = jsonLines(t, &viaSlog), jsonLines(t, &viaUs)
		if len(a) == 3 && len(b) == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(a) != 3 || len(b) != 3 {
		t.Fatalf("slog %d lines, accesslog %d lines", len(a), len(b))
	}
	for i := range a {
		ts, err1 := time.Parse(time.RFC3339Nano, a[i]["time"].(string))
		tu, err2 := time.Parse(time.RFC3339Nano, b[i]["time"].(string))
		if err1 != nil || err2 != nil || tu.Sub(ts).Abs() > time.Second {
			t.Errorf("line %d: times %v %v (%v, %v)", i, a[i]["time"], b[i]["time"], err1, err2)
		}
		delete(a[i], "time")
		delete(b[i], "time")
		// Both measure the same request a few microseconds apart.
		for _, k := range []string{"duration"} {
			da, db := a[i][k].(float64), b[i][k].(float64)
			if db < da || db-da > float64(time.Second) {
				t.Errorf("line %d: %s %v vs %v", i, k, da, db)
			}
			delete(a[i], k)
			delete(b[i], k)
		}
		ja, _ := json.Marshal(a[i])
		jb, _ := json.Marshal(b[i])
		if !bytes.Equal(ja, jb) {
			t.Errorf("line %d differs:\nslog:      %s\naccesslog: %s", i, ja, jb)
		}
	}
	if b[2]["status"].(float64) != 502 || b[2]["error"] == nil {
		t.Errorf("dead upstream line: %v", b[2])
	}
}

// Strings survive the round trip through a JSON decoder as encoding/json
// would carry them (invalid UTF-8 becomes U+FFFD).
func checkString(t *testing.T, s string) {
	s2 := proxy.Summary{URI: s}
	line := accesslog.AppendLine(nil, time.Unix(0, 0), &s2)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%q: invalid JSON %s: %v", s, line, err)
	}
	want, _ := json.Marshal(s)
	var ws string
	json.Unmarshal(want, &ws)
	if m["uri"] != ws {
		t.Fatalf("%q: decoded %q, want %q (line %s)", s, m["uri"], ws, line)
	}
	if bytes.ContainsAny(line[:len(line)-1], "\n\r<>&\u2028") {
		t.Fatalf("%q: raw newline or HTML character in %q", s, line)
	}
}

func TestStrings(t *testing.T) {
	for _, s := range []string{"", "plain", `"quoted"`, `back\slash`, "\x00\x01\x1f\x7f", "tab\tnl\ncr\r",
		"<script>&amp;</script>", "é ü 日本", "\xff\xfe bad", "\u2028\u2029", "a\xe2\x80", "\U0001F600"} {
		checkString(t, s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\xff", "\u2028<", "日本\x00"} {
		f.Add(s)
	}
	f.Fuzz(checkString)
}

func TestLogAllocatesNothing(t *testing.T) {
	l := accesslog.New(io.Discard)
	s := proxy.Summary{Method: "GET", URI: "/some/path?x=1", Proto: "HTTP/1.1", Remote: "127.0.0.1:5555",
		Host: "example.com", Status: 200, Upstream: "127.0.0.1:9000", Attempts: 1, Duration: time.Millisecond,
		UpstreamLatency: 900 * time.Microsecond, BytesOut: 100, Err: errors.New("x")}
	if n := testing.AllocsPerRun(1000, func() { l.Log(s) }); n != 0 {
		t.Fatalf("Log allocates %v times per line", n)
	}
}

func BenchmarkLog(b *testing.B) {
	l := accesslog.New(io.Discard)
	s := proxy.Summary{Method: "GET", URI: "/some/path?x=1", Proto: "HTTP/1.1", Remote: "127.0.0.1:5555",
		Host: "example.com", Status: 200, Upstream: "127.0.0.1:9000", Attempts: 1, Duration: time.Millisecond,
		UpstreamLatency: 900 * time.Microsecond, BytesOut: 100}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(s)
	}
}

func BenchmarkSlogJSON(b *testing.B) {
	l := slog.New(slog.NewJSONHandler(io.Discard, nil))
	b.ReportAllocs()
	for b.Loop() {
		l.LogAttrs(context.Background(), slog.LevelInfo, "access", slog.String("method", "GET"), slog.String("uri", "/some/path?x=1"),
			slog.String("proto", "HTTP/1.1"), slog.String("remote", "127.0.0.1:5555"), slog.String("host", "example.com"),
			slog.Int("status", 200), slog.String("upstream", "127.0.0.1:9000"), slog.Int("attempts", 1),
			slog.Int64("bytes_in", 0), slog.Int64("bytes_out", 100), slog.Duration("duration", time.Millisecond),
			slog.Duration("upstream_latency", 900*time.Microsecond))
	}
}

// The cached second and zone give what AppendFormat gives, across seconds,
// milliseconds and locations.
func TestTimeFormat(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -8*3600), time.Local}
	base := time.Date(2026, 11, 26, 23, 59, 58, 0, time.UTC)
	for i := range 400 {
		tm := base.Add(time.Duration(i) * 7 * time.Millisecond).In(zones[i%len(zones)])
		line := accesslog.AppendLine(nil, tm, &proxy.Summary{})
		want := `{"time":"` + tm.Format("2006-01-02T15:04:05.000Z07:00") + `"`
		if !bytes.HasPrefix(line, []byte(want)) {
			t.Fatalf("%v: %s, want prefix %s", tm, line, want)
		}
	}
}
