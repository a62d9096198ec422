package server

import "os"

// SLUICE_TEST_STDSERVER=1 runs this package's tests with net/http's server
// on every connection (the fast HTTP/1.1 loop off), so both keep passing
// the same behaviour tests. The proxy tests read it too (front_test.go).
func init() {
	if os.Getenv("SLUICE_TEST_STDSERVER") != "" {
		forceStdHTTP1 = true
	}
}
