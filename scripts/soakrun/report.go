package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

type report struct {
	cfg               config
	st                *stats
	reg               *registry
	plog              *proxyLog
	ch                *chaos
	backends          []*backend
	proxyErrs, upErrs *lineCounter
	base, after       usage
	settleTook        time.Duration
	drained           bool
	loadTime          time.Duration
}

type check struct {
	name string
	ok   bool
	got  string
}

// write prints the summary and the assertions, and returns the exit code.
func (r *report) write(w io.Writer) int {
	st := r.st
	fmt.Fprintf(w, "\n## Soak summary (%v of load, seed %d, %d workers, race=%v)\n\n",
		r.loadTime.Round(time.Second), r.cfg.seed, r.cfg.workers, raceEnabled)
	st.writeTable(w)

	fmt.Fprintln(w)
	fmt.Fprintln(w, "failed-visibly: the client saw an error and chaos had cut that response after its headers (allowed).")
	fmt.Fprintln(w, "error-status: the proxy answered 5xx instead of the upstream (allowed for POST only).")
	fmt.Fprintln(w, "unexplained-error: the client saw an error although chaos never cut that response after headers.")
	fmt.Fprintln(w, "failed-silently: a short or wrong response that ended without an error.")

	fmt.Fprintln(w)
	st.writeLatency(w)
	dups := r.reg.duplicates()
	ch := r.ch
	fmt.Fprintf(w, "\nuploads: %d reached an upstream; %d reached one more than once; %d arrived corrupted; %d failed at the client after an upstream had the whole body (answer lost)\n",
		r.reg.uploadsSeen(), len(dups), r.reg.hashMismatch.Load(), st.postAnswerLost.Load())
	for i, d := range dups {
		if i == 10 {
			fmt.Fprintf(w, "  ... %d more\n", len(dups)-i)
			break
		}
		var names []string
		for _, bi := range d.backends {
			names = append(names, r.backends[bi].name)
		}
		fmt.Fprintf(w, "  duplicate upload id=%d reached an upstream %d times: %s\n", d.id, d.count, strings.Join(names, ", "))
	}
	fmt.Fprintf(w, "chaos: kill=%d restart=%d slow=%d reset=%d midbody=%d restart-failures=%d\n",
		ch.kills.Load(), ch.restarts.Load(), ch.slows.Load(), ch.resets.Load(), ch.midbodies.Load(), ch.restartFailures.Load())
	if err, _ := ch.lastErr.Load().(error); err != nil {
		fmt.Fprintf(w, "  last restart error: %v\n", err)
	}
	for _, b := range r.backends {
		fmt.Fprintf(w, "  %s %s: requests=%d connections-reset=%d responses-cut=%d slowed=%d\n",
			b.name, b.Addr(), b.requests.Load(), b.connResets.Load(), b.cuts.Load(), b.slowed.Load())
	}
	fmt.Fprintln(w, "proxy:")
	r.plog.writeSummary(w)
	pn, ppanics, pfirst := r.proxyErrs.snapshot()
	fmt.Fprintf(w, "  proxy server log (warnings and errors): %d lines, %d panics\n", pn, ppanics)
	for _, l := range pfirst {
		fmt.Fprintf(w, "    %s\n", l)
	}
	un, _, _ := r.upErrs.snapshot()
	fmt.Fprintf(w, "  upstream http.Server error log: %d lines\n", un)

	fmt.Fprintf(w, "harness records kept until the end (in the heap figures below): %d uploads, %d cut responses, %d proxy failure records\n",
		r.reg.uploadsSeen(), r.reg.cuts(), r.plog.failedRecords())
	fmt.Fprintf(w, "resources: goroutines %d -> %d (settled in %v); RSS %.1f -> %.1f MiB (peak %.1f MiB); heap_inuse %.1f -> %.1f MiB\n",
		r.base.goroutines, r.after.goroutines, r.settleTook.Round(time.Millisecond),
		float64(r.base.rss)/mib, float64(r.after.rss)/mib, float64(r.after.hwm)/mib,
		float64(r.base.heapInuse)/mib, float64(r.after.heapInuse)/mib)

	if hasDetails(st) {
		fmt.Fprintln(w, "\ndetails (first few of each):")
		r.writeDetails(w)
	}

	idem, all := idempotentKinds, allKinds
	var total int64
	for _, k := range all {
		total += st.total(k)
	}
	checks := []check{
		{"load ran (requests of every kind in the mix)", r.everyKindRan(), fmt.Sprint(total, " requests")},
		{"chaos ran", !r.cfg.chaos || r.cfg.duration < 2*r.cfg.chaosMax || ch.kills.Load()+ch.slows.Load()+ch.resets.Load()+ch.midbodies.Load() > 0,
			fmt.Sprint(ch.kills.Load()+ch.slows.Load()+ch.resets.Load()+ch.midbodies.Load(), " disruptions")},
		{"every restart listened on its port again", ch.restartFailures.Load() == 0, fmt.Sprint(ch.restartFailures.Load(), " failures")},
		{"no idempotent failure: no 5xx from the proxy for GET, SSE, WS handshake", st.sum(oStatus, idem...) == 0, fmt.Sprint(st.sum(oStatus, idem...))},
		{"no client error without chaos after headers (all kinds)", st.sum(oUnexplained, all...) == 0, fmt.Sprint(st.sum(oUnexplained, all...))},
		{"no response short or wrong without an error (all kinds)", st.sum(oSilent, all...) == 0, fmt.Sprint(st.sum(oSilent, all...))},
		{"no upload reached an upstream twice", len(dups) == 0, fmt.Sprint(len(dups))},
		{"no upload arrived corrupted", r.reg.hashMismatch.Load() == 0, fmt.Sprint(r.reg.hashMismatch.Load())},
		{"every upload answered 200 was received in full", st.postOKUnrecorded.Load() == 0, fmt.Sprint(st.postOKUnrecorded.Load())},
		{"no panic in the proxy's handler", ppanics == 0, fmt.Sprint(ppanics)},
		{"the load drained within the request timeout", r.drained, fmt.Sprint(r.drained)},
		{fmt.Sprintf("goroutines back to baseline (+%d)", r.cfg.goroutineMargin),
			r.after.goroutines <= r.base.goroutines+r.cfg.goroutineMargin,
			fmt.Sprintf("%d vs %d", r.after.goroutines, r.base.goroutines)},
		{fmt.Sprintf("Go heap in use back to baseline (+%d MiB)", r.cfg.heapMargin/mib),
			r.after.heapInuse <= r.base.heapInuse+uint64(r.cfg.heapMargin),
			fmt.Sprintf("%+.1f MiB", (float64(r.after.heapInuse)-float64(r.base.heapInuse))/mib)},
		{fmt.Sprintf("RSS back to baseline (+%d MiB)", r.cfg.rssMargin/mib),
			r.after.rss == 0 || r.after.rss <= r.base.rss+r.cfg.rssMargin,
			fmt.Sprintf("%+.1f MiB", float64(r.after.rss-r.base.rss)/mib)},
	}
	fmt.Fprintln(w, "\nassertions:")
	failed := 0
	for _, c := range checks {
		mark := "PASS"
		if !c.ok {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", mark, c.name, c.got)
	}
	if failed > 0 {
		fmt.Fprintf(w, "\nsoak: FAIL (%d of %d assertions)\n", failed, len(checks))
		return 1
	}
	fmt.Fprintln(w, "\nsoak: PASS")
	return 0
}

func (r *report) everyKindRan() bool {
	for k := range nKinds {
		if r.cfg.mix[k] > 0 && r.st.total(k) == 0 && r.loadTime > 10*time.Second {
			return false
		}
	}
	return true
}

func hasDetails(st *stats) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k := range nKinds {
		if len(st.statuses[k]) > 0 {
			return true
		}
		for o := oVisible; o < nOutcomes; o++ {
			if len(st.samples[k][o]) > 0 {
				return true
			}
		}
	}
	return false
}

// writeDetails prints the sample failures with what the proxy logged for
// each (the access record of a failed request carries its attempts).
func (r *report) writeDetails(w io.Writer) {
	st := r.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for k := range nKinds {
		if len(st.statuses[k]) > 0 {
			fmt.Fprintf(w, "  %s error statuses from the proxy: %s\n", kindNames[k], statusList(st.statuses[k]))
		}
		for o := oVisible; o < nOutcomes; o++ {
			for _, smp := range st.samples[k][o] {
				line := fmt.Sprintf("  %s %s %s", kindNames[k], outcomeNames[o], smp.detail)
				if p := r.plog.failure(smp.id); p != "" {
					line += " | " + p
				}
				fmt.Fprintln(w, line)
			}
		}
	}
}
