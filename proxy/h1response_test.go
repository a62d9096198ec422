package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
)

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 3\r\n\r\nno\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\ncontent-length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\n\r\nuntil close",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
	"HTTP/1.1 200 OK\r\nX-Sp : v\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, x-hop\r\n\r\nhello",
}

// FuzzReadResponse: whatever the strict reader accepts, http.ReadResponse
// reads the same way (status, fields, length, close, body and how it
// ends); whatever it hands over, it has not consumed.
func FuzzReadResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
		if head {
			req.Method = http.MethodHead
		}
		br := bufio.NewReaderSize(bytes.NewReader(b), 4096)
		fast, ok, ferr := readResponseStrict(br, req, new(upstreamResponse))
		std, serr := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if !ok {
			if ferr != nil {
				if serr == nil {
					t.Fatalf("strict reader failed (%v) where net/http read %q", ferr, b)
				}
				return
			}
			// Handed over: net/http must read it as if nothing happened.
			again, aerr := http.ReadResponse(br, req)
			if (aerr == nil) != (serr == nil) || aerr == nil && again.StatusCode != std.StatusCode {
				t.Fatalf("after the hand-over net/http read %v, %v; fresh: %v, %v\n%q", again, aerr, std, serr, b)
			}
			return
		}
		if serr != nil {
			t.Fatalf("strict reader accepted %q; net/http: %v", b, serr)
		}
		type view struct {
			Status                           string
			StatusCode, ProtoMajor, ProtoMin int
			Proto                            string
			Header                           http.Header
			ContentLength                    int64
			Close                            bool
			TransferEncoding                 []string
			Trailer                          http.Header
		}
		see := func(r *http.Response) view {
			return view{r.Status, r.StatusCode, r.ProtoMajor, r.ProtoMinor, r.Proto, r.Header,
				r.ContentLength, r.Close, r.TransferEncoding, r.Trailer}
		}
		if f, s := see(fast), see(std); !reflect.DeepEqual(f, s) {
			t.Fatalf("strict %#v\nnet/http %#v\n%q", f, s, b)
		}
		if (fast.Body == http.NoBody) != (std.Body == http.NoBody) {
			t.Fatalf("body: strict %T, net/http %T\n%q", fast.Body, std.Body, b)
		}
		fb, ferr := io.ReadAll(fast.Body)
		sb, serr := io.ReadAll(std.Body)
		if !bytes.Equal(fb, sb) || !errors.Is(ferr, serr) && !(ferr != nil && serr != nil) {
			t.Fatalf("body: strict %q, %v; net/http %q, %v\n%q", fb, ferr, sb, serr, b)
		}
	})
}

// The strict reader leaves a response it hands over where it found it, and
// net/http then reads it: an interim response, a chunked one, one that runs
// to the connection's end.
func TestReadResponseHandsOver(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
	for _, raw := range []string{
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nok",
	} {
		br := bufio.NewReader(bytes.NewReader([]byte(raw)))
		res, ok, err := readResponseStrict(br, req, new(upstreamResponse))
		if ok || err != nil {
			t.Fatalf("strict reader took %q: %v, %v", raw, res, err)
		}
		if res, err = readResponse(br, req, new(upstreamResponse)); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if res.StatusCode != 103 && res.StatusCode != 200 {
			t.Fatalf("%q: status %d", raw, res.StatusCode)
		}
	}
}
