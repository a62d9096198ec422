package proxy

import (
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/upstream"
)

// roundTrip is the state of one client request as it goes through the
// steps of DESIGN.md: clone, prepare, body, attempts, respond, copy.
type roundTrip struct {
	h   *Handler
	w   http.ResponseWriter
	in  *http.Request
	out *http.Request

	sel     upstream.Selection
	info    informational
	body    requestBody
	upgrade string // the Upgrade token forwarded, if any

	start    time.Time
	attempts int
	up       *upstream.Upstream // upstream of the final response
	held     *upstream.Upstream // acquired, released when the body is copied
	status   int                // status sent (or 499 logged)
	ttfb     time.Duration      // time to upstream response headers
	written  int64              // response body bytes sent
	upBytes  int64              // bytes sent upstream through a tunnel
	err      error              // what went wrong, for the logs
	abort    bool               // abort the client stream when done

	// Room for the outbound request, its URL and the X-Forwarded values,
	// so they come with the round trip instead of three allocations of
	// their own.
	outReq  http.Request
	outURL  url.URL
	fwdVals [2]string

	// private says that nothing outside this request's goroutine can
	// still hold any part of the round trip once it is done, so it may
	// be recycled: every attempt went through the synchronous transport
	// and no tunnel was opened.
	private bool
	// Kept when the round trip is recycled: the outbound header map and
	// the upstream response's storage with its header map, emptied and
	// refilled by the next request served on this round trip.
	outHeader http.Header
	resp      upstreamResponse
}

// roundTrips recycles round trips: a small GET's outbound request, header
// maps and upstream response, about 1.5 KB, come back warm in the cache
// instead of as fresh memory to allocate, zero and later collect.
var roundTrips = sync.Pool{New: func() any { return new(roundTrip) }}

// maxRecycledFields bounds the header maps a recycled round trip keeps,
// so one request with a huge head does not pin a large map in the pool.
const maxRecycledFields = 32

func newRoundTrip(h *Handler, w http.ResponseWriter, r *http.Request) *roundTrip {
	rt := roundTrips.Get().(*roundTrip)
	rt.h, rt.w, rt.in, rt.start = h, w, r, time.Now()
	rt.private = h.sluice != nil
	rt.sel.Request = r
	rt.sel.Writer = w
	rt.resp.reuse = true
	return rt
}

// recycle returns rt to the pool if nothing else can still hold a part of
// it, with every reference it held dropped. Its header maps are emptied
// here, not only when they are next filled, so no header outlives its
// request.
func (rt *roundTrip) recycle() {
	if !rt.private {
		return
	}
	out, res := emptied(rt.outHeader), emptied(rt.resp.header)
	*rt = roundTrip{outHeader: out}
	rt.resp.header = res
	roundTrips.Put(rt)
}

// emptied empties h and returns it, or nil when it grew too large to keep.
func emptied(h http.Header) http.Header {
	n := len(h)
	clear(h)
	if n > maxRecycledFields {
		return nil
	}
	return h
}

// run serves the request and finishes the round trip.
func (rt *roundTrip) run() {
	defer rt.finish()
	rt.serve()
}

// finish runs however serve ended, a panic included (a ResponseWriter of an
// outer handler may panic): the upstream is released, the body buffer
// recycled and the access line written. A truncated response is then
// aborted: the client already has headers, and a clean end would make the
// body look complete.
func (rt *roundTrip) finish() {
	p := recover()
	if p != nil {
		rt.abort = true
		if rt.err == nil {
			rt.err = errPanic
		}
	}
	rt.releaseHeld(upstream.Ignored, rt.status)
	rt.body.release()
	rt.logAccess()
	rt.observe()
	if p != nil {
		panic(p)
	}
	if rt.abort {
		panic(http.ErrAbortHandler)
	}
}

// serve runs the attempt loop and delivers the outcome.
func (rt *roundTrip) serve() {
	h := rt.h
	h.budget.deposit()
	if !validTarget(rt.in) {
		rt.status = http.StatusBadRequest
		rt.err = errBadTarget
		rt.writeError(rt.status)
		return
	}
	rt.info.init(rt.w, rt.in)
	octx := rt.in.Context()
	if h.sluice == nil {
		// Any other RoundTripper learns of 1xx through the context.
		octx = httptrace.WithClientTrace(octx, &httptrace.ClientTrace{Got1xxResponse: rt.info.got1xx})
	}
	rt.out = &rt.outReq
	cloneRequest(octx, rt.in, rt.out, &rt.outURL, rt.outHeader)
	rt.outHeader = rt.out.Header
	rt.prepare()
	if err := rt.body.init(rt.in, rt.out, h.maxBuffer, &rt.info); err != nil {
		rt.badBody(err)
		return
	}

	ctx := rt.in.Context()
	deadline := rt.start.Add(h.retry.TryDuration)
	var last failure
	var lastErr error
	for {
		rt.attempts++
		res, f, err := rt.attempt()
		if f == 0 {
			rt.respond(res)
			return
		}
		switch f {
		case failClient:
			rt.clientGone(err)
			return
		case failClientBody:
			rt.badBody(err)
			return
		}
		// Keep the most telling failure: "no upstream" after a refused
		// dial says less than the dial error.
		if f != failNoUpstream || last == 0 {
			last, lastErr = f, err
		}
		pause := h.retry.backoff(rt.attempts)
		if !rt.mayRetry(f) || rt.attempts > h.retry.Retries ||
			!time.Now().Add(pause).Before(deadline) || !rt.budgetAllows(f) {
			if res != nil {
				// Out of attempts on a retryable status: the client gets
				// the upstream's answer as it was.
				rt.respond(res)
				return
			}
			rt.fail(last, lastErr)
			return
		}
		if res != nil {
			res.Body.Close()
		}
		h.log.LogAttrs(ctx, slogDebug, "retrying", attrErr(err), attrInt("attempt", rt.attempts))
		if !wait(ctx, pause) {
			rt.clientGone(ctx.Err())
			return
		}
	}
}

// budgetAllows asks the retry budget for one retry after failure f. A
// retry after a dial error is free: nothing was sent, so retrying loads no
// upstream twice, and charging it would turn one dead upstream into a
// stream of 502s once the budget ran dry (the soak run showed 8% of GETs
// failing with two healthy upstreams left).
func (rt *roundTrip) budgetAllows(f failure) bool {
	switch f {
	case failDial, failDialTimeout, failNoUpstream:
		return true
	}
	return rt.h.budget.withdraw()
}

// failRetryStatus marks a response whose status the policy retries.
const failRetryStatus failure = 100

// mayRetry applies the fixed safety rules to one failure.
func (rt *roundTrip) mayRetry(f failure) bool {
	switch f {
	case failDial, failDialTimeout:
		return rt.body.unsent()
	case failNoUpstream:
		return true // an upstream may come back (health, max_requests)
	}
	return idempotent(rt.in) && rt.body.replayable()
}

// attempt selects an upstream and sends the request once. It returns the
// response and f == 0 on success; on failure the failure class and error; for
// a retryable status, the response and failRetryStatus.
func (rt *roundTrip) attempt() (*http.Response, failure, error) {
	h := rt.h
	up, err := h.pool.Select(&rt.sel)
	if errors.Is(err, upstream.ErrNoUpstream) && rt.sel.Tried.Len() > 0 {
		// Everything was tried once: any upstream is better than none.
		rt.sel.Tried.Reset()
		up, err = h.pool.Select(&rt.sel)
	}
	if err != nil {
		if rt.in.Context().Err() != nil {
			return nil, failClient, rt.in.Context().Err()
		}
		return nil, failNoUpstream, err
	}
	out := rt.out
	out.URL.Scheme = up.Scheme
	if out.URL.Scheme == "" {
		out.URL.Scheme = "http"
	}
	out.URL.Host = up.Addr
	out.Body = rt.body.reader()

	rt.info.setActive(true)
	t0 := time.Now()
	var res *http.Response
	if h.sluice != nil {
		var sync bool
		res, sync, err = h.sluice.roundTripTraced(out, &rt.info, &rt.resp)
		rt.private = rt.private && sync
	} else {
		res, err = h.transport.RoundTrip(out)
	}
	rt.info.setActive(false)
	lat := time.Since(t0)

	if err != nil {
		f := classify(err, rt.in.Context())
		if cerr := rt.body.clientError(); cerr != nil {
			// The transport failed because reading the client's body did:
			// the client's fault, whatever the transport made of it (on
			// HTTP/2 the request is not even cancelled).
			f, err = failClientBody, cerr
		}
		kind := upstream.Failure
		if f == failClient || f == failClientBody {
			kind = upstream.Ignored
		}
		h.pool.Release(up, upstream.Outcome{Kind: kind, Latency: lat})
		rt.sel.Tried.Add(up)
		rt.up = up
		return nil, f, err
	}
	if res.StatusCode < 100 || res.StatusCode > 599 {
		// net/http panics on such a WriteHeader; the upstream is broken.
		res.Body.Close()
		h.pool.Release(up, upstream.Outcome{Kind: upstream.Failure, Latency: lat})
		rt.sel.Tried.Add(up)
		rt.up = up
		return nil, failOther, errBadStatus
	}
	if h.retry.retryStatus(res.StatusCode) && res.StatusCode != http.StatusSwitchingProtocols {
		h.pool.Release(up, upstream.Outcome{Kind: upstream.Ignored, Status: res.StatusCode, Latency: lat})
		rt.sel.Tried.Add(up)
		rt.up, rt.ttfb = up, lat
		return res, failRetryStatus, errors.New("upstream answered " + res.Status)
	}
	rt.up, rt.ttfb = up, lat
	rt.held = up
	return res, 0, nil
}
