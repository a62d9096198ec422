// Command loadgen is the small load generator of the benchmark harness
// (bench/run.sh). It has two modes:
//
//	loadgen rate  -url URL -rate R -conns N -duration D [-warmup W]
//	loadgen probe -url URL [-h2c] [-method M -body-size N] [-min-bytes N] [-timeout T]
//
// "rate" sends GET requests at a fixed rate over at most N keep-alive
// HTTP/1.1 connections and measures each request's latency from the time it
// was *scheduled* to be sent, not from when a free connection happened to
// send it. A slow server therefore cannot hide its stalls by slowing the
// generator down (no coordinated omission, as wrk2 does). It prints one line
// of key=value pairs: requests, errors, dropped (scheduled but never sent
// because the run fell too far behind), the achieved rate and the latency
// percentiles p50, p90, p99, p999 and max in microseconds.
//
// "probe" retries one request until it answers 200 with at least -min-bytes
// of body, or the timeout passes; it exits 0 on success and 1 otherwise,
// printing why. -h2c speaks cleartext HTTP/2 with prior knowledge.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen rate|probe [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "rate":
		err = runRate(os.Args[2:])
	case "probe":
		err = runProbe(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q (want rate or probe)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func newTransport(conns int, h2c bool) *http.Transport {
	t := &http.Transport{
		Proxy:               nil,
		MaxConnsPerHost:     conns,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	}
	return t
}

func runRate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET")
	rate := fs.Float64("rate", 1000, "requests per second")
	conns := fs.Int("conns", 32, "maximum number of keep-alive connections (and requests in flight)")
	duration := fs.Duration("duration", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", 0, "unmeasured run at the same rate before the measured one")
	grace := fs.Duration("grace", 5*time.Second, "how long past the end to keep sending late requests before dropping them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *rate <= 0 || *conns <= 0 || *duration <= 0 {
		return errors.New("rate: need -url, and positive -rate, -conns, -duration")
	}
	client := &http.Client{Transport: newTransport(*conns, false), Timeout: 30 * time.Second}
	if *warmup > 0 {
		phase(client, *url, *rate, *conns, *warmup, *grace)
	}
	r := phase(client, *url, *rate, *conns, *duration, *grace)
	lat := r.latencies
	slices.Sort(lat)
	pct := func(p float64) int64 {
		if len(lat) == 0 {
			return -1
		}
		i := int(p * float64(len(lat)))
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return lat[i].Microseconds()
	}
	achieved := float64(len(lat)) / r.elapsed.Seconds()
	fmt.Printf("requests=%d errors=%d dropped=%d elapsed_s=%.3f achieved_rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
		len(lat), r.errors, r.dropped, r.elapsed.Seconds(), achieved,
		pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1))
	if r.firstErr != nil {
		fmt.Fprintln(os.Stderr, "loadgen: first error:", r.firstErr)
	}
	return nil
}

type result struct {
	latencies []time.Duration
	errors    int64
	dropped   int64
	elapsed   time.Duration
	firstErr  error
}

// phase runs one fixed-rate phase. A pacer goroutine, alone on its OS thread,
// releases request i at start+i/rate into a queue; whichever worker is free
// takes it and measures latency from that scheduled time, so time spent
// waiting for a free connection counts against the server.
//
// The pacer sleeps with nanosleep(2) rather than time.Sleep: when every P is
// idle the Go runtime rounds timer waits below a millisecond up to one
// millisecond (epoll_wait's resolution), which would put up to 1 ms of the
// generator's own lateness into every latency at low rates.
func phase(client *http.Client, url string, rate float64, conns int, d, grace time.Duration) result {
	var mu sync.Mutex
	var res result
	total := int(rate * d.Seconds())
	slots := make(chan time.Time, total+1)
	start := time.Now().Add(20 * time.Millisecond)
	hardStop := start.Add(d + grace)

	go func() {
		runtime.LockOSThread()
		setTimerSlack(1)
		for i := range total {
			at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			preciseSleepUntil(at)
			slots <- at
		}
		close(slots)
	}()

	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, total/conns+16)
			var errs, dropped int64
			var firstErr error
			for at := range slots {
				if time.Now().After(hardStop) {
					dropped++
					continue
				}
				if err := get(client, url); err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				local = append(local, time.Since(at))
			}
			mu.Lock()
			res.latencies = append(res.latencies, local...)
			res.errors += errs
			res.dropped += dropped
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// preciseSleepUntil blocks the calling OS thread until t with nanosleep(2).
func preciseSleepUntil(t time.Time) {
	for {
		wait := time.Until(t)
		if wait <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(wait))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// setTimerSlack sets the calling thread's timer slack (prctl PR_SET_TIMERSLACK)
// so that nanosleep is not rounded by the default 50 µs.
func setTimerSlack(ns uintptr) {
	const prSetTimerSlack = 29
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, ns, 0)
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func runProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	url := fs.String("url", "", "URL to request")
	h2c := fs.Bool("h2c", false, "use cleartext HTTP/2 with prior knowledge")
	method := fs.String("method", http.MethodGet, "request method")
	bodySize := fs.Int("body-size", 0, "request body size in bytes")
	minBytes := fs.Int64("min-bytes", 1, "smallest acceptable response body")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("probe: need -url")
	}
	client := &http.Client{Transport: newTransport(1, *h2c), Timeout: 2 * time.Second}
	body := bytes.Repeat([]byte("x"), *bodySize)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var last error
	for {
		last = probeOnce(ctx, client, *method, *url, body, *minBytes, *h2c)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe %s %s: %w", *method, *url, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probeOnce(ctx context.Context, client *http.Client, method, url string, body []byte, minBytes int64, h2c bool) error {
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if n < minBytes {
		return fmt.Errorf("body %d bytes, want at least %d", n, minBytes)
	}
	if h2c && resp.ProtoMajor != 2 {
		return fmt.Errorf("answered %s, want HTTP/2", resp.Proto)
	}
	return nil
}
