package proxy

import (
	"fmt"
	"net/http"
	"testing"
)

// recycle empties the header maps it keeps, drops maps grown past
// maxRecycledFields, and leaves a round trip that is not private alone:
// its maps and request stay as they were, for whoever still holds them.
func TestRecycleEmptiesWhatItKeeps(t *testing.T) {
	in := &http.Request{Header: http.Header{"A": {"1"}}}
	small := http.Header{"X-One": {"1"}, "X-Two": {"2"}}
	large := http.Header{}
	for i := range maxRecycledFields + 1 {
		large[fmt.Sprint("X-", i)] = []string{"v"}
	}

	rt := &roundTrip{private: true, in: in, outHeader: small}
	rt.resp.header = large
	rt.recycle()
	if len(small) != 0 || len(large) != 0 {
		t.Fatalf("recycled maps still hold %d and %d fields", len(small), len(large))
	}
	// What recycle keeps (rt is in the pool now: another test may hold it).
	for i := range maxRecycledFields + 1 {
		large[fmt.Sprint("X-", i)] = []string{"v"}
	}
	small["X-One"] = []string{"1"}
	if got := emptied(small); got == nil || len(got) != 0 {
		t.Fatalf("a small map was not kept empty: %v", got)
	}
	if got := emptied(large); got != nil || len(large) != 0 {
		t.Fatalf("a map past %d fields was kept: %d fields", maxRecycledFields, len(got))
	}

	shared := http.Header{"X-Kept": {"1"}}
	rt = &roundTrip{private: false, in: in, outHeader: shared}
	rt.recycle()
	if len(shared) != 1 || rt.in != in || rt.outHeader == nil {
		t.Fatal("a round trip that is not private was emptied")
	}
}
