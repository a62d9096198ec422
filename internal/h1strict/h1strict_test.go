package h1strict

import (
	"net/http"
	"testing"
)

func TestHeadEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 27},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0}, // the CR may be followed by LF
		{"GET / HTTP/1.1\nHost: a\n\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n", -1},
		{"\n", -1},
		{"", 0},
	} {
		if got := HeadEnd([]byte(c.in)); got != c.want {
			t.Errorf("HeadEnd(%q) = %d, want %d", c.in, got, c.want)
		}
	}
	// Resuming finds what a full scan finds.
	b := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	for from := 0; from <= len(b)-3; from++ {
		if got := HeadEndFrom(b, max(0, from-3)); got != 27 {
			t.Errorf("HeadEndFrom(_, %d) = %d, want 27", max(0, from-3), got)
		}
	}
}

func TestContentLength(t *testing.T) {
	for v, want := range map[string]bool{
		"0": true, "5": true, "123456789012345678": true,
		"": false, "+5": false, "-1": false, " 5": false, "5 ": false, "1,1": false,
		"0x10": false, "1234567890123456789": false,
	} {
		if _, ok := ContentLength(v); ok != want {
			t.Errorf("ContentLength(%q) ok = %v, want %v", v, ok, want)
		}
	}
}

func TestFields(t *testing.T) {
	s := "A: 1\r\nb-c:  two \r\nA: 3\r\n\r\n"
	keep := func(key, value string) (bool, bool) { return key != "Drop", true }
	h, ok := Fields(s, 3, nil, keep)
	if !ok || len(h) != 2 || len(h["A"]) != 2 || h["A"][1] != "3" || h.Get("B-C") != "two" {
		t.Fatalf("Fields = %v, %v", h, ok)
	}
	// A map passed in is emptied and filled: what the last head had is gone.
	into := http.Header{"Old": {"x"}, "A": {"stale"}}
	h, ok = Fields(s, 3, into, keep)
	if !ok || len(h) != 2 || len(h["A"]) != 2 || h["A"][0] != "1" || h.Get("B-C") != "two" {
		t.Fatalf("Fields into a used map = %v, %v", h, ok)
	}
	if h["Old"] != nil || len(into) != 2 {
		t.Fatalf("Fields kept an old field: %v (into %v)", h, into)
	}
	for _, bad := range []string{
		"A: 1\r\n b\r\n\r\n",   // obs-fold
		"A : 1\r\n\r\n",        // space before the colon
		": 1\r\n\r\n",          // no name
		"A: \x01\r\n\r\n",      // control byte
		"A: 1\nB: 2\r\n\r\n",   // bare LF
		"A: 1\r\nB: 2\r\n\r\n", // more lines than counted (n=1)
	} {
		if _, ok := Fields(bad, 1, nil, func(string, string) (bool, bool) { return true, true }); ok {
			t.Errorf("Fields accepted %q", bad)
		}
	}
}
