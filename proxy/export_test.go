package proxy

import "os"

// SLUICE_TEST_NETHTTP=1 runs the proxy tests with net/http's Transport for
// every request, so both upstream paths pass the same behaviour tests.
func init() {
	if os.Getenv("SLUICE_TEST_NETHTTP") != "" {
		forceNetHTTP = true
	}
}

// NetHTTPForced reports whether SLUICE_TEST_NETHTTP put every request on
// net/http's Transport.
func NetHTTPForced() bool { return forceNetHTTP }
