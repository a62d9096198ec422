// Command backend is the origin server of the benchmark harness (bench/run.sh).
//
// It serves, on one loopback listener, HTTP/1.1 and cleartext HTTP/2 with
// prior knowledge (h2c), so the "direct" target can be measured with every
// workload:
//
//	GET  /          a ~100-byte text body
//	GET  /1m        a 1 MiB body
//	POST /upload    reads and discards the request body, answers a small body
//
// It logs nothing per request.
package main

import (
	"bytes"
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	small := bytes.Repeat([]byte("sluice-bench "), 8)[:100]
	small[99] = '\n'
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20/16)
	smallLen := strconv.Itoa(len(small))
	bigLen := strconv.Itoa(len(big))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{smallLen}
		_, _ = w.Write(small)
	})
	mux.HandleFunc("GET /1m", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{bigLen}
		_, _ = w.Write(big)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		body := "ok " + strconv.FormatInt(n, 10) + "\n"
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		_, _ = io.WriteString(w, body)
	})

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	log.Fatal(srv.ListenAndServe())
}
