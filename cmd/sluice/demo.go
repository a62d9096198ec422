package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/admin"
	"github.com/sluiceproxy/sluice/internal/gcfloor"
	"github.com/sluiceproxy/sluice/internal/server"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

type demoOptions struct {
	From     string
	fromSet  bool
	SelfTest bool
}

const demoDefaultFrom = "127.0.0.1:8080"

func parseDemoFlags(args []string) (demoOptions, error) {
	o := demoOptions{From: demoDefaultFrom}
	fs := newFlagSet("demo")
	var first error
	fs.Var(&demoFrom{o: &o, first: &first}, "from", "")
	fs.Var(&boolValue{name: "self-test", cmd: "demo", p: &o.SelfTest, first: &first}, "self-test", "")
	if err := parseFlagSet(fs, "demo", args, &first); err != nil {
		return o, err
	}
	return o, nil
}

type demoFrom struct {
	o     *demoOptions
	first *error
}

func (v *demoFrom) String() string { return demoDefaultFrom }
func (v *demoFrom) Set(s string) error {
	if err := checkListenAddr(s); err != nil {
		e := &usageError{"demo", fmt.Sprintf("--from %q: %v", s, err)}
		if *v.first == nil {
			*v.first = e
		}
		return e
	}
	v.o.From, v.o.fromSet = s, true
	return nil
}

const demoUsage = `Usage: sluice demo [--from ADDR] [--self-test]

Starts three small backends on loopback (ephemeral ports), sluice in front of
them, and a control listener that stops and starts backends and serves
/metrics and /status. Prints commands to try: load balancing, server-sent
events, a WebSocket, a retry around a stopped backend, metrics. The access
log goes to standard output. Runs until Ctrl-C.

Each backend answers:
  /              hello from backend-N
  /sse           text/event-stream, one event a second, ten in all
  /ws            WebSocket echo (RFC 6455)
  /slow?ms=N     answers after N milliseconds (at most 60000)
  /status/N      answers with status N (200-599)

Flags:
  --from ADDR    proxy listen address (default 127.0.0.1:8080; with
                 --self-test, a free port unless given)
  --self-test    run the tour against the demo itself, print the results and
                 exit: status 0 when every step passed, 1 otherwise
`

// demo is the running tour: backends, proxy listener, control listener.
type demo struct {
	backends []*backend
	handler  *proxy.Handler
	ln       net.Listener // the proxy's
	control  *http.Server
	ctlAddr  string
	retried  atomic.Int64 // access lines with attempts > 1
	admin    *admin.Admin // /metrics and /status on the control listener
	log      *slog.Logger
}

func runDemo(ctx context.Context, o demoOptions, e env) error {
	from := o.From
	if o.SelfTest && !o.fromSet {
		from = "127.0.0.1:0"
	}
	accessOut, logLevel := e.stdout, slog.LevelInfo
	if o.SelfTest {
		accessOut, logLevel = io.Discard, slog.LevelWarn
	}
	defer gcfloor.Start(defaultGCFloor).Stop()
	d, err := startDemo(from, accessOut, newLogger(e.stderr, "text", logLevel))
	if err != nil {
		return err
	}
	defer d.close()
	if e.ready != nil {
		e.ready(d.ln.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- server.Serve(ctx, d.ln, d.handler, server.Options{Logger: d.log, ShutdownTimeout: 2 * time.Second})
	}()
	if !o.SelfTest {
		d.printTour(e.stdout)
		return <-served
	}
	testErr := d.selfTest(ctx, e.stdout)
	cancel()
	if err := <-served; err != nil && testErr == nil {
		testErr = err
	}
	return testErr
}

func startDemo(from string, accessOut io.Writer, log *slog.Logger) (*demo, error) {
	d := &demo{log: log}
	// The proxy's port first: if it is taken, say so before anything else.
	ln, err := server.Listen(from)
	if err != nil {
		if server.IsAddrInUse(err) {
			return nil, fmt.Errorf("%s is already in use; pick another address, e.g. sluice demo --from 127.0.0.1:8081", from)
		}
		return nil, err
	}
	d.ln = ln
	var ups []*upstream.Upstream
	for i := 1; i <= 3; i++ {
		b := &backend{name: "backend-" + strconv.Itoa(i)}
		if err := b.start(); err != nil {
			d.close()
			return nil, err
		}
		d.backends = append(d.backends, b)
		ups = append(ups, upstream.New(b.addr))
	}
	access := slog.New(retryCounter{slog.NewTextHandler(accessOut, nil), &d.retried})
	pool := upstream.NewPool(nil, ups...)
	metrics := admin.NewMetrics()
	d.handler, err = proxy.New(proxy.Config{
		Upstreams: pool,
		Logger:    log,
		AccessLog: access,
		Observe:   metrics.Observe,
	})
	if err != nil {
		d.close()
		return nil, err
	}
	if d.admin, err = admin.New(pool, metrics); err != nil {
		d.close()
		return nil, err
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.close()
		return nil, err
	}
	d.ctlAddr = cl.Addr().String()
	d.control = &http.Server{Handler: d.controlMux(), ReadHeaderTimeout: 5 * time.Second}
	go d.control.Serve(cl)
	return d, nil
}

// close stops the control listener and the backends. The proxy listener is
// closed by server.Serve (or here, if serving never started).
func (d *demo) close() {
	if d.control != nil {
		d.control.Close()
	}
	for _, b := range d.backends {
		b.stop()
	}
	d.ln.Close()
}

func (d *demo) backend(name string) *backend {
	for _, b := range d.backends {
		if b.name == name {
			return b
		}
	}
	return nil
}

func (d *demo) controlMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		for _, b := range d.backends {
			state := "up"
			if !b.running() {
				state = "stopped"
			}
			fmt.Fprintf(w, "%s %s %s\n", b.name, b.addr, state)
		}
	})
	// What `sluice proxy --admin` serves on its own listener.
	mux.Handle("GET /metrics", d.admin)
	mux.Handle("GET /status", d.admin)
	mux.HandleFunc("POST /backends/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		b := d.backend(r.PathValue("name"))
		if b == nil {
			http.Error(w, "no such backend; there are backend-1, backend-2 and backend-3", http.StatusNotFound)
			return
		}
		switch r.PathValue("action") {
		case "stop":
			b.stop()
			fmt.Fprintf(w, "%s stopped\n", b.name)
		case "start":
			if err := b.start(); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			fmt.Fprintf(w, "%s started on %s\n", b.name, b.addr)
		default:
			http.Error(w, "want stop or start", http.StatusNotFound)
		}
	})
	return mux
}

func (d *demo) printTour(w io.Writer) {
	p := "http://" + displayAddr(d.ln.Addr())
	c := "http://" + d.ctlAddr
	fmt.Fprintf(w, "\nsluice demo: proxy on %s\n", p)
	for _, b := range d.backends {
		fmt.Fprintf(w, "  upstream %s on %s\n", b.name, b.addr)
	}
	fmt.Fprintf(w, "  control on %s (stops and starts backends, serves /metrics and /status; not proxied)\n", c)
	fmt.Fprintf(w, `
Try, in another terminal:

  # load balancing: round robin over the three backends
  for i in 1 2 3; do curl -s %[1]s/; done

  # server-sent events: ten events, one a second, each flushed at once
  curl -N %[1]s/sse

  # WebSocket: the 101 handshake passes through the proxy (Ctrl-C to end)
  curl --include --no-buffer -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' %[1]s/ws
  #   with websocat installed, an interactive echo:  websocat %[3]s/ws

  # a slow upstream and an upstream error status, passed through
  curl -s '%[1]s/slow?ms=1500'
  curl -si %[1]s/status/503

  # retries: stop backend-2 and every request still succeeds; the access
  # log shows attempts=2 where backend-2 was tried first
  curl -X POST %[2]s/backends/backend-2/stop
  for i in 1 2 3 4 5 6; do curl -s %[1]s/; done
  curl -X POST %[2]s/backends/backend-2/start

  # Prometheus metrics and the upstreams' state (sluice proxy --admin ADDR
  # serves the same on a listener of its own)
  curl -s %[2]s/metrics | grep '^sluice_'
  curl -s %[2]s/status

Access log follows. Ctrl-C stops the demo.

`, p, c, "ws://"+displayAddr(d.ln.Addr()))
}

// displayAddr turns a wildcard listen address into one a client can use.
func displayAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("localhost", strconv.Itoa(ta.Port))
}

// retryCounter counts access lines whose request needed more than one
// attempt, for the self-test.
type retryCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h retryCounter) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "attempts" && a.Value.Kind() == slog.KindInt64 && a.Value.Int64() > 1 {
			h.n.Add(1)
		}
		return true
	})
	return h.Handler.Handle(ctx, r)
}

func (h retryCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return retryCounter{h.Handler.WithAttrs(as), h.n}
}

func (h retryCounter) WithGroup(g string) slog.Handler {
	return retryCounter{h.Handler.WithGroup(g), h.n}
}

// backend is one demo upstream. It can be stopped and started again on the
// same port.
type backend struct {
	name string
	mu   sync.Mutex
	addr string // fixed by the first start
	srv  *http.Server
	ws   map[net.Conn]struct{} // hijacked connections, closed by stop
}

func (b *backend) running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srv != nil
}

func (b *backend) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return nil
	}
	addr := b.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("starting %s: %w", b.name, err)
	}
	b.addr = ln.Addr().String()
	b.srv = &http.Server{
		Handler:           b.mux(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go b.srv.Serve(ln)
	return nil
}

func (b *backend) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return
	}
	b.srv.Close()
	b.srv = nil
	for c := range b.ws {
		c.Close()
	}
}

// track registers a hijacked connection so stop can close it.
func (b *backend) track(c net.Conn) func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ws == nil {
		b.ws = make(map[net.Conn]struct{})
	}
	b.ws[c] = struct{}{}
	if b.srv == nil { // stopped while the handshake ran
		c.Close()
	}
	return func() {
		b.mu.Lock()
		delete(b.ws, c)
		b.mu.Unlock()
	}
}

func (b *backend) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", b.name)
		fmt.Fprintf(w, "hello from %s\n", b.name)
	})
	mux.HandleFunc("/sse", b.serveSSE)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveWS(w, r, b.track) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > 60000 {
			http.Error(w, "want /slow?ms=N with N from 0 to 60000", http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			fmt.Fprintf(w, "%s answered after %d ms\n", b.name, ms)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/N with N from 200 to 599", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d from %s\n", code, b.name)
	})
	return mux
}

const sseEvents = 10

func (b *backend) serveSSE(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 1; i <= sseEvents; i++ {
		if i > 1 {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "id: %d\ndata: tick %d of %d from %s\n\n", i, i, sseEvents, b.name)
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

var errSelfTest = errors.New("self-test failed")
