package main

import (
	"strings"
	"testing"
	"time"
)

func TestBufferedLogFlushesOnTimeAndClose(t *testing.T) {
	var dst syncBuffer
	bl := newBufferedLog(&dst, 1024)
	bl.Write([]byte("one\n"))
	if dst.String() != "" {
		t.Fatal("a line reached the file before a flush")
	}
	deadline := time.Now().Add(3 * accessLogFlushEvery)
	for dst.String() == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if dst.String() != "one\n" {
		t.Fatalf("after the flush interval the file has %q", dst.String())
	}
	bl.Write([]byte("two\n"))
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	if dst.String() != "one\ntwo\n" {
		t.Fatalf("after Close the file has %q", dst.String())
	}
}

// A full buffer is written before the line that would not fit, so no line
// is ever split across two writes.
func TestBufferedLogNeverSplitsLines(t *testing.T) {
	var dst syncBuffer
	bl := newBufferedLog(&dst, 16)
	defer bl.Close()
	bl.Write([]byte("0123456789\n"))
	bl.Write([]byte("abcdefghij\n")) // does not fit behind the first
	if got := dst.String(); got != "0123456789\n" {
		t.Fatalf("file has %q, want only the first whole line", got)
	}
	long := strings.Repeat("x", 40) + "\n" // larger than the buffer: written through
	bl.Write([]byte(long))
	if got := dst.String(); got != "0123456789\nabcdefghij\n"+long {
		t.Fatalf("file has %q", got)
	}
}
