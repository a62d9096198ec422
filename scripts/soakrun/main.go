// Command soakrun is sluice's soak test: for a set time it sends a mixed
// load (small GETs, 1 MiB uploads, uploads of up to 64 KiB that take the
// proxy's synchronous path, SSE streams, WebSocket echoes) through a
// proxy.Handler to three upstreams while a chaos loop kills, restarts,
// slows and resets them, one at a time. Everything runs in this process on
// loopback. At the end it prints a summary and exits 1 if any assertion
// failed:
//
//   - every idempotent request (GET, SSE, WebSocket handshake) succeeded,
//     or failed visibly because chaos broke its response after the headers;
//     none got an error status from the proxy;
//   - no upload reached an upstream twice, none arrived corrupted;
//   - no response was cut short without the client seeing an error;
//   - goroutines and RSS came back to their baseline after the load.
//
// Usage: go run ./scripts/soakrun [-duration 2m] [-workers 16] [-seed N] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/server"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/upstream"
)

type config struct {
	duration        time.Duration
	workers         int
	seed            uint64
	verbose         bool
	mix             mix
	retries         int
	budgetRatio     float64
	chaos           bool
	chaosMin        time.Duration
	chaosMax        time.Duration
	maxDisrupted    int
	midbody         bool
	uploadSize      int
	reqTimeout      time.Duration
	progress        time.Duration
	settle          time.Duration
	goroutineMargin int
	rssMargin       int64 // bytes
	heapMargin      int64 // bytes

	// Hooks for the harness's own tests: a broken proxy must fail the soak.
	wrap      func(http.Handler) http.Handler // wraps the proxy handler
	transport http.RoundTripper               // proxy.Config.Transport
	actions   []string                        // chaos actions (-actions); nil means all
}

const numBackends = 3

func defaultConfig() config {
	m, _ := parseMix("get=50,sse=20,ws=15,post=15,post64=5")
	return config{
		duration: 2 * time.Minute, workers: 16, mix: m, retries: 3,
		chaos: true, chaosMin: time.Second, chaosMax: 3 * time.Second, maxDisrupted: 1, midbody: true,
		uploadSize: 1 << 20, reqTimeout: 30 * time.Second, progress: 10 * time.Second,
		settle: 20 * time.Second, goroutineMargin: 5, rssMargin: defaultRSSMargin(), heapMargin: 16 * mib,
	}
}

// defaultRSSMargin is how far RSS may stay above its pre-load baseline once
// the load is over, collected and returned to the OS.
//
// 64 MiB: after the load every request buffer is garbage, and
// debug.FreeOSMemory returns freed spans to the kernel, so what remains is
// runtime bookkeeping that grew with the peak (span and GC metadata, the
// stack cache, heap arenas that cannot be returned because a live object
// pins them) — a few MiB to ~20 MiB in practice with 16 workers and 1 MiB
// uploads. 64 MiB is three times that, yet small enough to catch what a leak
// would look like here: 64 leaked 1 MiB upload buffers, or ~1 KiB held per
// request over a 2-minute run. A slow leak is better caught by heap_inuse
// (printed too) and by the 30-minute run.
//
// Under -race, ThreadSanitizer's shadow memory (several times the heap it
// ever covered) and its per-goroutine state are not given back to the OS,
// so RSS there says little about the program; the margin is 512 MiB.
func defaultRSSMargin() int64 {
	if raceEnabled {
		return 512 * mib
	}
	return 64 * mib
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "soakrun:", err)
		os.Exit(2)
	}
	code, _ := run(cfg, os.Stdout)
	os.Exit(code)
}

func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("soakrun", flag.ContinueOnError)
	fs.DurationVar(&cfg.duration, "duration", cfg.duration, "how long the load and the chaos last (CI: 2m; by hand: 30m)")
	fs.IntVar(&cfg.workers, "workers", cfg.workers, "concurrent client workers, each sending one request at a time")
	fs.Uint64Var(&cfg.seed, "seed", 0, "random seed for the load and the chaos; 0 picks one (printed)")
	fs.BoolVar(&cfg.verbose, "v", false, "log every chaos action, client failure and proxy error")
	mixStr := fs.String("mix", "get=50,sse=20,ws=15,post=15,post64=5", "request mix, as kind=weight for get, sse, ws, post (-upload-size bytes), post64 (1-64 KiB)")
	fs.IntVar(&cfg.retries, "retries", cfg.retries, "proxy RetryPolicy.Retries")
	fs.Float64Var(&cfg.budgetRatio, "budget-ratio", 0, "proxy RetryPolicy.BudgetRatio; 0 keeps the proxy default (0.2)")
	fs.BoolVar(&cfg.chaos, "chaos", cfg.chaos, "disrupt the upstreams (false: a control run)")
	fs.DurationVar(&cfg.chaosMin, "chaos-min", cfg.chaosMin, "shortest pause between chaos actions")
	fs.DurationVar(&cfg.chaosMax, "chaos-max", cfg.chaosMax, "longest pause between chaos actions")
	fs.IntVar(&cfg.maxDisrupted, "max-disrupted", cfg.maxDisrupted, "upstreams disrupted at the same time, at most (1 or 2)")
	fs.BoolVar(&cfg.midbody, "midbody", cfg.midbody, "let chaos also reset responses mid-body")
	actions := fs.String("actions", "", "chaos actions to choose from, comma-separated: kill, slow, reset, midbody (default all; restart always happens)")
	fs.IntVar(&cfg.uploadSize, "upload-size", cfg.uploadSize, "bytes per POST upload")
	fs.DurationVar(&cfg.reqTimeout, "timeout", cfg.reqTimeout, "client timeout per request")
	fs.DurationVar(&cfg.progress, "progress", cfg.progress, "progress line interval")
	fs.DurationVar(&cfg.settle, "settle", cfg.settle, "how long goroutines may take to come back to baseline")
	fs.IntVar(&cfg.goroutineMargin, "goroutine-margin", cfg.goroutineMargin, "goroutines allowed above the baseline after the load")
	rssMiB := fs.Int64("rss-margin", cfg.rssMargin/mib, "MiB of RSS allowed above the baseline after the load")
	heapMiB := fs.Int64("heap-margin", cfg.heapMargin/mib, "MiB of Go heap in use allowed above the baseline after the load")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	m, err := parseMix(*mixStr)
	if err != nil {
		return cfg, err
	}
	cfg.mix = m
	if *actions != "" {
		for a := range strings.SplitSeq(*actions, ",") {
			a = strings.TrimSpace(a)
			switch a {
			case "kill", "slow", "reset", "midbody":
				cfg.actions = append(cfg.actions, a)
			default:
				return cfg, fmt.Errorf("-actions: unknown action %q (want kill, slow, reset, midbody)", a)
			}
		}
	}
	cfg.rssMargin = *rssMiB * mib
	cfg.heapMargin = *heapMiB * mib
	switch {
	case cfg.duration <= 0:
		return cfg, errors.New("-duration must be positive")
	case cfg.workers < 1 || cfg.workers > 1024:
		return cfg, errors.New("-workers must be between 1 and 1024")
	case cfg.maxDisrupted < 1 || cfg.maxDisrupted >= numBackends:
		return cfg, fmt.Errorf("-max-disrupted must be between 1 and %d: never all upstreams at once", numBackends-1)
	case cfg.chaosMin <= 0 || cfg.chaosMax < cfg.chaosMin:
		return cfg, errors.New("-chaos-min must be positive and at most -chaos-max")
	case cfg.uploadSize < 8 || cfg.uploadSize > 64<<20:
		return cfg, errors.New("-upload-size must be between 8 bytes and 64 MiB")
	case cfg.reqTimeout <= 0 || cfg.progress <= 0 || cfg.settle < 0:
		return cfg, errors.New("-timeout and -progress must be positive, -settle not negative")
	case cfg.budgetRatio < 0 || cfg.budgetRatio > 1:
		return cfg, errors.New("-budget-ratio must be between 0 and 1")
	}
	if cfg.seed == 0 {
		cfg.seed = rand.Uint64()
	}
	return cfg, nil
}

// printer serialises output lines from many goroutines.
type printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *printer) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// restart makes the timestamps count from now and returns now.
func (p *printer) restart() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start = time.Now()
	return p.start
}

// run performs one soak and returns the exit code and the report.
func run(cfg config, out io.Writer) (int, *report) {
	pr := &printer{w: out, start: time.Now()}
	var vlogf func(string, ...any)
	if cfg.verbose {
		vlogf = pr.logf
	}
	acts := "all"
	if cfg.actions != nil {
		acts = strings.Join(cfg.actions, ",")
	} else if !cfg.midbody {
		acts = "kill,slow,reset"
	}
	fmt.Fprintf(out, "soak: duration=%v workers=%d seed=%d mix=%s retries=%d budget-ratio=%s chaos=%v (every %v-%v, max %d disrupted, actions %s) race=%v GOMAXPROCS=%d\n",
		cfg.duration, cfg.workers, cfg.seed, cfg.mix, cfg.retries, budgetString(cfg.budgetRatio), cfg.chaos,
		cfg.chaosMin, cfg.chaosMax, cfg.maxDisrupted, acts, raceEnabled, runtime.GOMAXPROCS(0))

	reg := newRegistry()
	block := make([]byte, 2<<20)
	cc := rand.NewChaCha8([32]byte{byte(cfg.seed), byte(cfg.seed >> 8), byte(cfg.seed >> 16), 's', 'o', 'a', 'k'})
	_, _ = cc.Read(block)

	upErrs := &lineCounter{name: "upstream server log", logf: vlogf}
	backends := make([]*backend, numBackends)
	ups := make([]*upstream.Upstream, numBackends)
	for i := range backends {
		backends[i] = newBackend(i, cfg.seed, reg, block, log.New(upErrs, "", 0))
		if err := backends[i].start(); err != nil {
			fmt.Fprintln(out, "soak: setup:", err)
			return 2, nil
		}
		ups[i] = upstream.New(backends[i].Addr())
	}
	defer func() {
		for _, b := range backends {
			b.kill()
		}
	}()

	retry := proxy.RetryPolicy{Retries: cfg.retries, BudgetRatio: cfg.budgetRatio}
	plog := newProxyLog(cfg.retries, 10*time.Second) // TryDuration default
	plog.logf = vlogf
	h, err := proxy.New(proxy.Config{
		Upstreams: upstream.NewPool(nil, ups...),
		Transport: cfg.transport,
		Retry:     retry,
		Logger:    plog.errorLogger(),
		AccessLog: plog.accessLogger(),
	})
	if err != nil {
		fmt.Fprintln(out, "soak: setup:", err)
		return 2, nil
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(out, "soak: setup:", err)
		return 2, nil
	}
	proxyErrs := &lineCounter{name: "proxy server log", logf: vlogf}
	var handler http.Handler = h
	if cfg.wrap != nil {
		handler = cfg.wrap(h)
	}
	// The proxy is served as sluice serves it: internal/server, with its
	// own HTTP/1.1 loop, request guard and slow-client limits. Its log
	// (warnings and errors: panics, refused connections) is counted.
	sctx, stopServing := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = server.Serve(sctx, pln, handler, server.Options{
			H2C:             true,
			ShutdownTimeout: 5 * time.Second,
			Logger:          slog.New(slog.NewTextHandler(proxyErrs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}()
	defer func() {
		stopServing()
		<-served
		h.Close()
	}()
	fmt.Fprintf(out, "soak: proxy on %s; upstreams %s, %s, %s\n", pln.Addr(),
		backends[0].Addr(), backends[1].Addr(), backends[2].Addr())

	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   cfg.workers * 2,
		IdleConnTimeout:       time.Minute,
		DisableCompression:    true,
		ResponseHeaderTimeout: cfg.reqTimeout,
	}
	h2tr := tr.Clone()
	h2tr.Protocols = new(http.Protocols)
	h2tr.Protocols.SetUnencryptedHTTP2(true)
	st := newStats()
	st.logf = vlogf
	ld := &loader{
		base: "http://" + pln.Addr().String(), addr: pln.Addr().String(),
		client: &http.Client{Transport: tr}, h2client: &http.Client{Transport: h2tr},
		reg: reg, st: st, mix: cfg.mix,
		uploadSize: cfg.uploadSize, reqTimeout: cfg.reqTimeout, seed: cfg.seed,
	}
	ch := &chaos{
		backends: backends, rng: rand.New(rand.NewPCG(cfg.seed, 0xc4a05)),
		maxDisrupted: cfg.maxDisrupted, midbody: cfg.midbody,
		min: cfg.chaosMin, max: cfg.chaosMax, logf: vlogf, only: cfg.actions,
	}

	base := measure()
	fmt.Fprintf(out, "soak: baseline goroutines=%d rss=%.1fMiB heap_inuse=%.1fMiB\n",
		base.goroutines, float64(base.rss)/mib, float64(base.heapInuse)/mib)

	// Load and chaos.
	loadStart := pr.restart()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		if cfg.chaos {
			ch.run(ctx)
		}
	}()
	var wg sync.WaitGroup
	for i := range cfg.workers {
		wg.Go(func() { ld.worker(i) })
	}
	workersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	progressDone := make(chan struct{})
	stopProgress := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(cfg.progress)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				ld.classify(false)
				rss, _ := procStatus()
				pr.logf("%s pending=%d retry-denied=%d | chaos kill=%d restart=%d slow=%d reset=%d midbody=%d | goroutines=%d rss=%.0fMiB",
					st.progressLine(), ld.pendingCount(), plog.deniedCount(), ch.kills.Load(), ch.restarts.Load(), ch.slows.Load(),
					ch.resets.Load(), ch.midbodies.Load(), runtime.NumGoroutine(), float64(rss)/mib)
			}
		}
	}()

	<-ctx.Done()
	ld.stop.Store(true)
	<-chaosDone
	ch.healAll()
	drained := true
	drainWait := cfg.reqTimeout + 15*time.Second
	select {
	case <-workersDone:
	case <-time.After(drainWait):
		drained = false
		fmt.Fprintf(out, "soak: workers still busy %v after the end; goroutines:\n", drainWait)
		_ = pprof.Lookup("goroutine").WriteTo(out, 1)
	}
	close(stopProgress)
	<-progressDone
	loadTime := time.Since(loadStart)
	ld.classify(true)

	// Back to baseline?
	tr.CloseIdleConnections()
	h2tr.CloseIdleConnections()
	h.Close() // idle upstream connections (and tunnels, none left)
	gor, took := settleGoroutines(base.goroutines+cfg.goroutineMargin, cfg.settle)
	after := measure()
	if gor > base.goroutines+cfg.goroutineMargin {
		fmt.Fprintf(out, "soak: %d goroutines after %v (baseline %d); goroutines:\n", gor, took.Round(time.Millisecond), base.goroutines)
		_ = pprof.Lookup("goroutine").WriteTo(out, 1)
	}

	r := &report{
		cfg: cfg, st: st, reg: reg, plog: plog, ch: ch, backends: backends,
		proxyErrs: proxyErrs, upErrs: upErrs, base: base, after: after, settleTook: took,
		drained: drained, loadTime: loadTime,
	}
	return r.write(out), r
}

func budgetString(r float64) string {
	if r == 0 {
		return "default"
	}
	return fmt.Sprint(r)
}

func (m mix) String() string {
	var parts []string
	for k := range nKinds {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.ToLower(kindNames[k]), m[k]))
	}
	return strings.Join(parts, ",")
}
