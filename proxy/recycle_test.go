package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluiceproxy/sluice/proxy"
)

// Round trips are recycled with their header maps (roundtrip.go). Requests
// with different headers, one after another and side by side, must each
// reach the upstream with exactly their own headers, and each client must
// get exactly its own response's headers: nothing left over from a request
// served before on the same round trip. The first request's maps are too
// large to keep, the others' are kept and refilled.
func TestRecycledRoundTripsKeepHeadersApart(t *testing.T) {
	u := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, br *bufio.Reader) {
		for {
			req, err := u.readRequest(br)
			if err != nil {
				return
			}
			var names []string
			var b strings.Builder
			b.WriteString("HTTP/1.1 200 OK\r\n")
			for k := range req.Header {
				if strings.HasPrefix(k, "X-H-") {
					names = append(names, k)
					fmt.Fprintf(&b, "X-Back-%s: %s\r\n", k[len("X-H-"):], req.Header.Get(k))
				}
			}
			slices.Sort(names)
			body := strings.Join(names, ",")
			fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
			io.WriteString(c, b.String())
		}
	})
	h, _ := h1Proxy(t, u.ln.Addr().String(), proxy.TransportOptions{}, proxy.RetryPolicy{})
	px := frontServer(t, h)
	t.Cleanup(px.Close)
	client := isolatedClient(t)

	// check sends request id with n headers of its own and checks both
	// directions.
	check := func(id, n int) error {
		req, err := http.NewRequest("GET", px.URL+"/", nil)
		if err != nil {
			return err
		}
		var want []string
		for k := range n {
			name := fmt.Sprintf("X-H-%d-%d", id, k)
			req.Header.Set(name, fmt.Sprint(id))
			want = append(want, name)
		}
		slices.Sort(want)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		if got := string(b); got != strings.Join(want, ",") {
			return fmt.Errorf("request %d: upstream saw headers %q, want %q", id, got, strings.Join(want, ","))
		}
		var back []string
		for k, vv := range res.Header {
			if strings.HasPrefix(k, "X-Back-") {
				if len(vv) != 1 || vv[0] != fmt.Sprint(id) {
					return fmt.Errorf("request %d: response header %s: %q", id, k, vv)
				}
				back = append(back, "X-H-"+k[len("X-Back-"):])
			}
		}
		slices.Sort(back)
		if !slices.Equal(back, want) {
			return fmt.Errorf("request %d: got response headers for %q, want %q", id, back, want)
		}
		return nil
	}

	if err := check(0, 40); err != nil { // larger than a recycled map may be
		t.Fatal(err)
	}
	for id := 1; id <= 20; id++ {
		if err := check(id, 1+id%4); err != nil {
			t.Fatal(err)
		}
	}

	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := 100 + w*each + i
				if err := check(id, 1+id%5); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
