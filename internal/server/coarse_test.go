package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// HTTP/1 requests get the slow-client limits as connection deadlines (not
// the watchdog), unless the server's own ReadTimeout/WriteTimeout owns
// that side; a wrapper between net/http and the limits would silently lose
// this, so it is checked here.
func TestHTTP1LimitsUseConnectionDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		o                     Options
		wantCoarseRd, wantCWr bool
	}{
		{"defaults", Options{}, true, true},
		{"server ReadTimeout", Options{ReadTimeout: time.Minute}, false, true},
		{"server WriteTimeout", Options{WriteTimeout: time.Minute}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			o.BodyReadTimeout, o.WriteIdleTimeout = time.Minute, time.Minute
			type seen struct {
				rd, wr     bool
				rDog, wDog bool
			}
			got := make(chan seen, 1)
			h := clientTimeouts(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				g := w.(*watchedHijacker).g
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "ok")
				got <- seen{g.coarseRd, g.coarseWr, g.watchRd, g.watchWr}
			}), o)
			srv := httptest.NewServer(h)
			defer srv.Close()
			res, err := http.Post(srv.URL, "text/plain", strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			s := <-got
			if string(b) != "ok" || s.rd != tc.wantCoarseRd || s.wr != tc.wantCWr ||
				s.rDog == s.rd || s.wDog == s.wr {
				t.Fatalf("body %q; coarse read %v write %v, watchdog read %v write %v", b, s.rd, s.wr, s.rDog, s.wDog)
			}
		})
	}
}
