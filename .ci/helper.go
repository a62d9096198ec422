//go:build ignore

// helper is the small Go side of .ci/h2spec and .ci/slow (build it with
// go build -o helper .ci/helper.go):
//
//	helper backend      serves HTTP/1.1 on 127.0.0.1:0 and prints the
//	                    address; answers /big with 1 MiB, anything else
//	                    with a short body
//	helper junit FILE   prints one line per case of an h2spec JUnit
//	                    report: "ID STATUS NAME", ID as h2spec takes it
//	                    (http2/6.5.3/1), STATUS pass, fail or skip
package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper backend | junit FILE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "backend":
		backend()
	case "junit":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: helper junit FILE")
			os.Exit(2)
		}
		junit(os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "usage: helper backend | junit FILE")
		os.Exit(2)
	}
}

func backend() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	// Some h2spec cases are skipped when the answer has fewer than 5
	// body bytes.
	big := strings.Repeat("sluice slow-read test body\n", 1<<20/27+1)[:1<<20]
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "hello from the sluice test backend\n")
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

type report struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string    `xml:"classname,attr"`
			Error   *struct{} `xml:"error"`
			Failure *struct{} `xml:"failure"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// junit turns h2spec's JUnit report into test IDs. h2spec numbers the cases
// of a section from 1 in the order it runs them, which is the order of the
// report; "h2spec http2/6.5.3/1" runs just that one.
func junit(file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var r report
	if err := xml.Unmarshal(b, &r); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
		os.Exit(1)
	}
	n := 0
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			status := "pass"
			switch {
			case c.Error != nil || c.Failure != nil:
				status = "fail"
			case c.Skipped != nil:
				status = "skip"
			}
			fmt.Printf("%s/%s %s %s\n", s.Package, strconv.Itoa(i+1), status, c.Name)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintf(os.Stderr, "%s: no test cases\n", file)
		os.Exit(1)
	}
}
