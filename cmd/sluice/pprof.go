//go:build pprof

package main

// Profiling for development: `go build -tags pprof ./cmd/sluice`, then run
// with SLUICE_PPROF=127.0.0.1:6060 and fetch /debug/pprof/profile. Kept out
// of normal builds so no release binary serves pprof by accident.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("SLUICE_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
}
