package main

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// bufferedLog batches access-log lines: one write(2) per line costs more
// than formatting it. Like nginx's access_log buffer=/flush=, lines reach
// the file when the buffer fills, at least every flushEvery, and on Close.
type bufferedLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	dst  io.Writer
	stop chan struct{}
	done chan struct{}
}

const accessLogFlushEvery = time.Second

func newBufferedLog(dst io.Writer, size int) *bufferedLog {
	b := &bufferedLog{
		w:    bufio.NewWriterSize(dst, size),
		dst:  dst,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go b.flushLoop()
	return b
}

func (b *bufferedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// slog writes one whole line per call; never split it across a flush.
	if len(p) > b.w.Available() && b.w.Buffered() > 0 {
		if err := b.w.Flush(); err != nil {
			return 0, err
		}
	}
	return b.w.Write(p)
}

func (b *bufferedLog) flushLoop() {
	defer close(b.done)
	t := time.NewTicker(accessLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.mu.Lock()
			_ = b.w.Flush()
			b.mu.Unlock()
		case <-b.stop:
			return
		}
	}
}

// Close flushes what is buffered and stops the flusher.
func (b *bufferedLog) Close() error {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}
