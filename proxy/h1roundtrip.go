package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice/internal/sockio"
)

// yieldCPU is sockio.YieldCPU; tests count the calls.
var yieldCPU = sockio.YieldCPU

var (
	errUnexpected101 = errors.New("upstream switched protocols without being asked")
	// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
	aLongTimeAgo = time.Unix(1, 0)
)

// max1xxResponses is how many 1xx responses get a fresh header budget each;
// after that, all further 1xx share one (MaxResponseHeaderBytes), so an
// upstream cannot keep us reading 1xx forever.
const max1xxResponses = 64

// roundTripH1 sends req over a pooled connection and reads the response
// headers on the calling goroutine. The response body reads from the same
// connection, which goes back to the pool when the body is fully read.
func (t *Transport) roundTripH1(req *http.Request, body *replayReader, info got1xxFunc, into *upstreamResponse) (*http.Response, error) {
	ctx := req.Context()
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			// The client left (an HTTP/2 stream reset before its handler
			// ran, say): send nothing. The exchange would notice only
			// when its fast window ends (h1watch.go).
			closeBody(req, body)
			return nil, err
		}
		c, err := t.getConn(ctx, req.URL.Host)
		if err != nil {
			closeBody(req, body)
			return nil, err
		}
		res, err := t.exchange(ctx, c, req, body, info, into)
		if err == nil {
			if body != nil {
				body.Close() // written in full; the bytes are no longer needed
			}
			return res, nil
		}
		// A kept-alive connection the upstream closed just as we sent:
		// send again on a new connection if that cannot duplicate the
		// request (as net/http does).
		// Not after a timeout: the upstream was alive and slow, and a
		// resend would double the wait.
		if try == 0 && c.reused && ctx.Err() == nil && c.read == 0 && !isTimeout(err) &&
			(c.written == 0 || idempotent(req)) {
			if body != nil {
				next := body.sb.newReader().(*replayReader)
				body.Close()
				body = next
			}
			continue
		}
		closeBody(req, body)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

func closeBody(req *http.Request, body *replayReader) {
	if body != nil {
		body.Close()
	} else if req.Body != nil {
		req.Body.Close()
	}
}

// exchange writes req on c and reads the final response headers, into the
// given storage or, when it is nil, new storage. On error c is closed.
func (t *Transport) exchange(ctx context.Context, c *h1conn, req *http.Request, body *replayReader,
	info got1xxFunc, into *upstreamResponse) (*http.Response, error) {
	// Abort blocked I/O when the client goes away, until the response
	// body is done: see h1watch.go.
	c.beginExchange(ctx, req.ProtoMajor >= 2)
	fail := func(err error) (*http.Response, error) {
		c.endExchange()
		c.close()
		return nil, err
	}

	if err := writeRequest(c.bw, req, body); err != nil {
		return fail(err)
	}
	// An upstream on this machine that the write woke may be queued behind
	// this thread on its CPU; when no other exchange is waiting, the thread
	// is about to go idle anyway, so let the upstream run first
	// (sockio.YieldCPU). Under load others wait too and nothing is yielded.
	if !t.opts.NoPeerYield {
		alone := t.awaiting.Add(1) == 1
		defer t.awaiting.Add(-1)
		if alone {
			yieldCPU()
		}
	}
	if err := c.startHeaders(t.opts.ResponseHeaderTimeout); err != nil {
		return fail(err)
	}
	c.headerLimit = t.opts.MaxResponseHeaderBytes
	var res *http.Response
	if into == nil {
		into = new(upstreamResponse)
	}
	for n := 0; ; n++ {
		var err error
		res, err = readResponse(c.br, req, into)
		if err != nil {
			if c.readErr != nil && c.readErr != io.EOF {
				// A deadline or reset cut a line short; bufio handed the
				// parser the partial line. The socket error is the cause.
				err = c.readErr
			}
			return fail(err)
		}
		if res.StatusCode < 100 || res.StatusCode > 599 {
			return fail(errBadStatus)
		}
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// Past the cap, 1xx are still read (the final answer follows them)
		// but no longer relayed, and their bytes count against one header
		// budget, as net/http does for 1xx nobody looked at.
		if n < max1xxResponses && info != nil {
			if err := info.got1xx(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return fail(err)
			}
			c.headerLimit = t.opts.MaxResponseHeaderBytes
		}
	}
	c.headerLimit = -1
	if err := c.endHeaders(); err != nil {
		res.Body.Close()
		return fail(err)
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		return fail(errUnexpected101)
	}
	into.body = h1body{t: t, c: c, rc: res.Body, ctx: ctx,
		reusable: !res.Close && !req.Close}
	res.Body = &into.body
	return res, nil
}

// h1body returns its connection to the pool once the body was read to the
// end, and closes it in every other case.
type h1body struct {
	t        *Transport
	c        *h1conn
	rc       io.ReadCloser
	ctx      context.Context
	reusable bool
	done     bool
}

func (b *h1body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
		return n, io.EOF
	}
	if err != nil {
		b.finish(false)
		if b.ctx.Err() != nil {
			return n, b.ctx.Err()
		}
	}
	return n, err
}

func (b *h1body) Close() error {
	if !b.done {
		// A body that has no bytes (HEAD, 204, 304) is complete unread.
		b.finish(b.rc == http.NoBody)
	}
	return nil
}

func (b *h1body) finish(complete bool) {
	b.done = true
	if !b.c.endExchange() {
		complete = false // the client's context fired; the deadline is poisoned
	}
	// Bytes after the end of the response were never asked for: the
	// connection's framing cannot be trusted any more.
	if complete && b.reusable && b.c.br.Buffered() == 0 {
		b.t.putConn(b.c)
		return
	}
	b.c.close()
}

// reqHeaderSkip lists headers writeRequest emits itself from the request's
// fields, never from the header map, so a client cannot inject framing.
func reqHeaderSkip(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
		return true
	}
	return false
}

// writeRequest serialises req as HTTP/1.1. Framing headers come from
// ContentLength and the in-memory body only.
func writeRequest(w *bufio.Writer, req *http.Request, body *replayReader) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("invalid Host %q", host)
	}
	if !validMethod(req.Method) {
		return fmt.Errorf("invalid method %q", req.Method)
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	u := req.URL
	if u.Opaque != "" && !strings.HasPrefix(u.Opaque, "//") {
		w.WriteString(u.Opaque)
		if u.ForceQuery || u.RawQuery != "" {
			w.WriteByte('?')
			w.WriteString(u.RawQuery)
		}
	} else {
		w.WriteString(u.RequestURI())
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		if !httpguts.ValidHeaderFieldValue(ua[0]) {
			return errors.New("invalid User-Agent value")
		}
		w.WriteString("User-Agent: ")
		w.WriteString(ua[0])
		w.WriteString("\r\n")
	}
	for k, vv := range req.Header {
		if reqHeaderSkip(k) {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid value for header %s", k)
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if req.Close {
		w.WriteString("Connection: close\r\n")
	}
	n := int64(0)
	if body != nil {
		n = int64(body.r.Len())
	}
	if n > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		var num [20]byte
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(num[:0], n, 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	if body != nil && n > 0 {
		if _, err := body.r.WriteTo(w); err != nil {
			return err
		}
	}
	return w.Flush()
}

func validMethod(m string) bool {
	return m != "" && validToken(m)
}
