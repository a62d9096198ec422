// Command floorproxy is a yardstick, not a proxy to run: the least a
// goroutine-per-connection Go proxy can do for the harness's small GET, on
// sluice's socket layer (internal/sockio). It parses nothing but the
// framing, allocates nothing per request and gives each client connection
// an upstream connection of its own. Its CPU per request and latency show
// how much of sluice's cost is Go's runtime and the system calls, and how
// much is sluice's own work (docs/performance.md, "The fixed-rate tail").
//
// It handles requests without a body and responses with Content-Length
// only: the bench backend's GET /.
package main

import (
	"bytes"
	"errors"
	"flag"
	"log"
	"net"
	"strconv"

	"github.com/sluiceproxy/sluice/internal/sockio"
)

func main() {
	from := flag.String("from", "127.0.0.1:18091", "listen address")
	to := flag.String("to", "127.0.0.1:19000", "upstream address")
	flag.Parse()
	ln, err := net.Listen("tcp", *from)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(sockio.Wrap(c), *to)
	}
}

var (
	headEnd       = []byte("\r\n\r\n")
	contentLength = []byte("\r\nContent-Length: ")
)

func serve(c net.Conn, to string) {
	defer c.Close()
	nu, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	u := sockio.Wrap(nu)
	defer u.Close()
	in := make([]byte, 16<<10)
	out := make([]byte, 16<<10)
	for {
		n, err := readHead(c, in)
		if err != nil {
			return
		}
		if _, err := u.Write(in[:n]); err != nil {
			return
		}
		k, err := readResponse(u, out)
		if err != nil {
			return
		}
		if _, err := c.Write(out[:k]); err != nil {
			return
		}
	}
}

// readHead reads until buf holds a whole request head.
func readHead(c net.Conn, buf []byte) (int, error) {
	n := 0
	for !bytes.Contains(buf[:n], headEnd) {
		if n == len(buf) {
			return 0, errTooBig
		}
		m, err := c.Read(buf[n:])
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

// readResponse reads until buf holds a whole Content-Length response.
func readResponse(u net.Conn, buf []byte) (int, error) {
	k, want := 0, -1
	for want < 0 || k < want {
		if k == len(buf) {
			return 0, errTooBig
		}
		m, err := u.Read(buf[k:])
		if err != nil {
			return 0, err
		}
		k += m
		if want >= 0 {
			continue
		}
		h := bytes.Index(buf[:k], headEnd)
		if h < 0 {
			continue
		}
		i := bytes.Index(buf[:h+2], contentLength)
		if i < 0 {
			return 0, errNoLength
		}
		v := buf[i+len(contentLength):]
		cl, err := strconv.Atoi(string(v[:bytes.IndexByte(v, '\r')]))
		if err != nil {
			return 0, err
		}
		want = h + len(headEnd) + cl
	}
	return k, nil
}

var (
	errNoLength = errors.New("response without Content-Length")
	errTooBig   = errors.New("message larger than the buffer") // instead of reading 0 bytes forever
)
