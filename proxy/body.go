package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// requestBody makes the outbound body replayable when it is small enough:
// bodies up to the buffer limit are read once into pooled memory and every
// attempt gets a fresh reader over the same bytes. Larger bodies (and
// Expect: 100-continue requests, where the upstream must see the request
// before the client sends the body) stream; they may only be retried when not
// a byte of them was read.
type requestBody struct {
	buffered *sharedBuffer // non-nil when replayable from memory
	stream   *streamBody   // non-nil when streaming
	none     bool          // no body at all
	size     int64         // bytes read from the client while buffering
}

// clientError returns the error reading the client's body while streaming
// it upstream, or nil.
func (b *requestBody) clientError() error {
	if b.stream == nil {
		return nil
	}
	if p := b.stream.clientErr.Load(); p != nil {
		return *p
	}
	return nil
}

// bytesRead is how many body bytes were read from the client so far.
func (b *requestBody) bytesRead() int64 {
	if b.stream != nil {
		return b.stream.n.Load()
	}
	return b.size
}

var errBodyTooLarge = errors.New("request body too large")

// init reads the body if it fits. It returns an error only when reading the
// client's body failed (the client is gone or sent a broken body).
func (b *requestBody) init(in, out *http.Request, limit int64, info *informational) error {
	if in.Body == nil || in.Body == http.NoBody || in.ContentLength == 0 && len(in.TransferEncoding) == 0 {
		b.none = true
		out.Body, out.ContentLength, out.GetBody = nil, 0, nil
		return nil
	}
	announced := len(out.Trailer) > 0
	if headerHasToken(in.Header, "Expect", "100-continue") {
		b.stream = newStreamBody(in.Body, nil, in, out)
		b.stream.info = info
		// When the upstream answers without 100 Continue, the transport
		// must not send the body anyway (it does on a connection it means
		// to keep): that would upload what nobody wants and make net/http
		// send the client a 100 next to the final answer.
		out.Close = true
		return nil
	}
	if limit < 0 || in.ContentLength > limit {
		b.stream = newStreamBody(in.Body, nil, in, out)
		return nil
	}
	sb := getSharedBuffer()
	n, err := sb.buf.ReadFrom(io.LimitReader(in.Body, limit+1))
	if err != nil {
		sb.unref()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge
		}
		return err
	}
	if n > limit {
		// Too large after all (chunked): send what we read, then the rest.
		b.stream = newStreamBody(in.Body, sb, in, out)
		b.stream.n.Store(n)
		return nil
	}
	b.buffered = sb
	b.size = n
	if announced {
		// Trailers arrived with the end of the body; keep chunked framing
		// so the transport can send them.
		copyTrailers(out.Trailer, in.Trailer)
		out.ContentLength = -1
	} else {
		out.ContentLength = n
	}
	return nil
}

// reader returns the body for one attempt.
func (b *requestBody) reader() io.ReadCloser {
	switch {
	case b.none:
		return nil
	case b.buffered != nil:
		return b.buffered.newReader()
	}
	return b.stream
}

// replayable reports whether the next attempt can send the whole body again.
func (b *requestBody) replayable() bool {
	return b.none || b.buffered != nil || !b.stream.started()
}

// unsent reports whether no byte of the body has been handed to a transport:
// a retry after a dial error is then safe whatever the body.
func (b *requestBody) unsent() bool {
	return b.stream == nil || !b.stream.started()
}

func (b *requestBody) release() {
	if b.buffered != nil {
		b.buffered.unref()
		b.buffered = nil
	}
}

// sharedBuffer holds a buffered body. It goes back to the pool only when the
// request is done and every reader handed to a transport was closed: a
// transport may still be reading a failed attempt's body after RoundTrip
// returned.
type sharedBuffer struct {
	buf  bytes.Buffer
	refs atomic.Int32
}

var bodyPool = sync.Pool{New: func() any { return new(sharedBuffer) }}

// Buffers that grew past this are dropped instead of pooled, so one large
// body does not pin memory forever.
const maxPooledBody = 256 << 10

func getSharedBuffer() *sharedBuffer {
	sb := bodyPool.Get().(*sharedBuffer)
	sb.refs.Store(1)
	return sb
}

func (sb *sharedBuffer) unref() {
	if sb.refs.Add(-1) == 0 {
		if sb.buf.Cap() <= maxPooledBody {
			sb.buf.Reset()
			bodyPool.Put(sb)
		}
	}
}

func (sb *sharedBuffer) newReader() io.ReadCloser {
	sb.refs.Add(1)
	r := &replayReader{sb: sb}
	r.r.Reset(sb.buf.Bytes())
	return r
}

type replayReader struct {
	sb     *sharedBuffer
	r      bytes.Reader
	closed atomic.Bool
}

func (r *replayReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// WriteTo lets the transport copy without an extra buffer.
func (r *replayReader) WriteTo(w io.Writer) (int64, error) { return r.r.WriteTo(w) }

func (r *replayReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.sb.unref()
	}
	return nil
}

// streamBody passes the client's body through. Close is a no-op until a byte
// was read: Go's transport closes the body when a dial fails, which would
// otherwise kill the body for the retry (and hang an Expect: 100-continue
// client).
type streamBody struct {
	pr   bytes.Reader
	body io.ReadCloser
	read atomic.Bool
	n    atomic.Int64 // bytes read from the client
	// clientErr is the error reading the client's body, if it failed: the
	// transport then reports a failure that is the client's, not the
	// upstream's.
	clientErr atomic.Pointer[error]
	in, out   *http.Request
	// info, for Expect: 100-continue requests, serialises net/http's
	// automatic 100 with relayed 1xx (see informational.sendContinue).
	info   *informational
	primed bool // only the transport's body-writing goroutine reads this
}

func newStreamBody(body io.ReadCloser, prefix *sharedBuffer, in, out *http.Request) *streamBody {
	s := &streamBody{body: body, in: in, out: out}
	if prefix != nil {
		// The bytes read while trying to buffer go first. Their buffer is
		// left to the garbage collector, not the pool: a transport
		// goroutine may read it after we are done, and over-limit bodies
		// are rare.
		s.pr.Reset(prefix.buf.Bytes())
	}
	out.ContentLength = in.ContentLength
	if prefix != nil {
		out.ContentLength = -1
	}
	return s
}

func (s *streamBody) started() bool { return s.read.Load() }

func (s *streamBody) Read(p []byte) (int, error) {
	if s.info != nil && !s.primed {
		s.primed = true
		s.info.sendContinue(s.body)
	}
	s.read.Store(true)
	if s.pr.Len() > 0 {
		return s.pr.Read(p)
	}
	n, err := s.body.Read(p)
	s.n.Add(int64(n))
	if err != nil && err != io.EOF {
		s.clientErr.CompareAndSwap(nil, &err)
	}
	if err == io.EOF && len(s.out.Trailer) > 0 {
		// The client's trailers are known now; the transport writes
		// out.Trailer after it sees EOF.
		copyTrailers(s.out.Trailer, s.in.Trailer)
	}
	return n, err
}

func (s *streamBody) Close() error {
	if !s.read.Load() {
		return nil
	}
	return s.body.Close()
}

func copyTrailers(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}
