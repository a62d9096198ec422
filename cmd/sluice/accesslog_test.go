package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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

// writeRecorder keeps every Write call apart, so a test can see how lines
// were grouped into writes to the file. gate, when set, holds each write
// until it is closed or sent on.
type writeRecorder struct {
	mu     sync.Mutex
	writes []string
	gate   chan struct{}
	err    error
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), w.err
}

func (w *writeRecorder) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// Lines reach the file whole, in order, each write holding whole lines and
// no more than the buffer unless one line is longer than it.
func TestBufferedLogNeverSplitsLines(t *testing.T) {
	var dst writeRecorder
	bl := newBufferedLog(&dst, 16)
	lines := []string{"0123456789\n", "abcdefghij\n", "k\n", "l\n", strings.Repeat("x", 40) + "\n", "m\n", "nopqrstuvwxyz\n"}
	for _, line := range lines {
		if n, err := bl.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", line, n, err)
		}
	}
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	writes := dst.all()
	if got, want := strings.Join(writes, ""), strings.Join(lines, ""); got != want {
		t.Fatalf("file has %q, want %q", got, want)
	}
	for _, w := range writes {
		if !strings.HasSuffix(w, "\n") {
			t.Errorf("write %q ends inside a line", w)
		}
		if len(w) > 16 && strings.Count(w, "\n") > 1 {
			t.Errorf("write %q holds more than the buffer", w)
		}
	}
	if len(writes) < 4 {
		t.Errorf("%d writes for %d lines through a 16-byte buffer: %q", len(writes), len(lines), writes)
	}
}

// The file is written off the request's path: while a write hangs, lines
// keep gathering in the other buffer. Only when both buffers are taken
// does a line wait, and it is not dropped.
func TestBufferedLogWritesOffTheRequestPath(t *testing.T) {
	dst := writeRecorder{gate: make(chan struct{})}
	bl := newBufferedLog(&dst, 16)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		bl.Write([]byte("first-line\n"))  // gathers
		bl.Write([]byte("second-line\n")) // hands the first buffer over: its write hangs
		bl.Write([]byte("third-line\n"))  // does not fit behind the second: must wait
	}()
	// The first two return while the file write hangs; the third waits.
	select {
	case <-wrote:
		t.Fatal("a line was logged while both buffers were taken")
	case <-time.After(200 * time.Millisecond):
	}
	bl.mu.Lock()
	gathered := string(bl.buf)
	bl.mu.Unlock()
	if gathered != "second-line\n" {
		t.Fatalf("while the write hangs, the gathering buffer has %q", gathered)
	}
	close(dst.gate)
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting line was not logged after the write finished")
	}
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dst.all(), ""); got != "first-line\nsecond-line\nthird-line\n" {
		t.Fatalf("file has %q", got)
	}
}

// Concurrent requests log whole lines, none lost, with the writer and the
// periodic flush racing them (run with -race).
func TestBufferedLogConcurrentLines(t *testing.T) {
	var dst writeRecorder
	bl := newBufferedLog(&dst, 64)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				bl.Write(fmt.Appendf(nil, "g%d-%d\n", g, i))
			}
		})
	}
	wg.Wait()
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, w := range dst.all() {
		for _, line := range strings.SplitAfter(w, "\n") {
			if line == "" {
				continue
			}
			if !strings.HasSuffix(line, "\n") || seen[line] {
				t.Fatalf("split or repeated line %q", line)
			}
			seen[line] = true
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("%d lines in the file, want %d", len(seen), writers*each)
	}
}

// A failing file is reported when the log closes, and lines logged after
// Close are written at once.
func TestBufferedLogReportsWriteErrorOnClose(t *testing.T) {
	dst := writeRecorder{err: errors.New("disk full")}
	bl := newBufferedLog(&dst, 1024)
	bl.Write([]byte("one\n"))
	if err := bl.Close(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Close = %v, want the write error", err)
	}
	dst.err = nil
	bl.Write([]byte("late\n"))
	if got := strings.Join(dst.all(), ""); got != "one\nlate\n" {
		t.Fatalf("file has %q", got)
	}
}

// A failing access log is reported once when it starts failing and once
// when it works again, not once per line.
func TestAccessLogFailureReportedOncePerEpisode(t *testing.T) {
	var procLog syncBuffer
	dst := writeRecorder{}
	r := &failureReporter{w: &dst, log: slog.New(slog.NewTextHandler(&procLog, nil))}
	write := func(line string, fail bool) {
		dst.mu.Lock()
		dst.err = nil
		if fail {
			dst.err = errors.New("no space left on device")
		}
		dst.mu.Unlock()
		r.Write([]byte(line))
	}
	write("ok-1\n", false)
	for range 5 {
		write("lost\n", true)
	}
	write("ok-2\n", false)
	write("ok-3\n", false)
	write("lost-again\n", true)

	got := procLog.String()
	if n := strings.Count(got, "level=ERROR"); n != 2 {
		t.Errorf("%d error lines for two failure episodes, want 2:\n%s", n, got)
	}
	if n := strings.Count(got, "access log: writing again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, got)
	}
	if !strings.Contains(got, "no space left on device") {
		t.Errorf("the error lines do not say what failed:\n%s", got)
	}
}
