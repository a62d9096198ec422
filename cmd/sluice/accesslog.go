package main

import (
	"io"
	"log/slog"
	"sync"
	"time"
)

// bufferedLog batches access-log lines, as nginx's access_log
// buffer=/flush= does: one write(2) per line costs more than formatting
// it. Lines reach the file when a buffer fills, at least every
// accessLogFlushEvery, and on Close.
//
// The file is written by a goroutine of its own, never by the request that
// fills the buffer: a write on the request's path would hold up that
// connection and every request behind the lock meanwhile (a 64 KiB write
// every couple of hundred requests), and on HTTP/2, TLS and chunked
// responses the access line is logged before the response's last bytes go
// out, so the client would wait for it too. Two buffers take turns: lines gather
// in one while the other is being written. Only when the writer still has
// the other buffer (the disk is behind by a whole buffer) does a request
// wait, so memory stays at two buffers and no line is dropped.
type bufferedLog struct {
	dst  io.Writer
	size int

	mu      sync.Mutex
	turn    sync.Cond // signalled when the writer hands a buffer back
	buf     []byte    // lines gathering
	spare   []byte    // the other buffer; nil while pending or being written
	pending []byte    // a full buffer handed to the writer
	closed  bool      // after Close, lines are written at once

	kick chan struct{} // capacity 1: a buffer is pending
	stop chan struct{}
	done chan struct{}
	err  error // the first write error, reported by Close; only the writer sets it until Close
}

const accessLogFlushEvery = time.Second

func newBufferedLog(dst io.Writer, size int) *bufferedLog {
	l := &bufferedLog{
		dst:   dst,
		size:  size,
		buf:   make([]byte, 0, size),
		spare: make([]byte, 0, size),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.turn.L = &l.mu
	go l.writeLoop()
	return l
}

// Write takes one whole line (the access logger writes one per call) and
// never splits it across two writes to the file. A line longer than the
// buffer goes out in a buffer of its own.
func (l *bufferedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed && len(l.buf) > 0 && len(l.buf)+len(p) > l.size {
		if l.spare == nil {
			l.turn.Wait() // the writer still has the other buffer: the disk is behind
			continue
		}
		l.pending, l.buf, l.spare = l.buf, l.spare, nil
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	if l.closed {
		return l.dst.Write(p)
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func (l *bufferedLog) writeLoop() {
	defer close(l.done)
	t := time.NewTicker(accessLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.kick:
		case <-t.C:
		case <-l.stop:
			return
		}
		if b := l.take(); b != nil {
			l.writeOut(b)
			l.giveBack(b)
		}
	}
}

// take returns the pending buffer or, for the periodic flush, the lines
// gathered so far; nil when there is nothing to write.
func (l *bufferedLog) take() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.pending; b != nil {
		l.pending = nil
		return b
	}
	if len(l.buf) == 0 || l.spare == nil {
		return nil
	}
	b := l.buf
	l.buf, l.spare = l.spare, nil
	return b
}

// giveBack makes a written buffer the spare again. One grown past the size
// by a long line is dropped for a new one, so memory stays at two buffers
// of the configured size.
func (l *bufferedLog) giveBack(b []byte) {
	if cap(b) > l.size {
		b = make([]byte, 0, l.size)
	}
	l.mu.Lock()
	l.spare = b[:0]
	l.turn.Broadcast()
	l.mu.Unlock()
}

func (l *bufferedLog) writeOut(b []byte) {
	if _, err := l.dst.Write(b); err != nil && l.err == nil {
		l.err = err
	}
}

// Close writes what is buffered, stops the writer and reports the first
// write error. Lines logged after Close are written at once.
func (l *bufferedLog) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending != nil {
		l.writeOut(l.pending) // handed over just before the writer stopped
		l.pending = nil
	}
	if len(l.buf) > 0 {
		l.writeOut(l.buf)
	}
	l.buf = nil
	l.closed = true
	l.turn.Broadcast() // a line waiting for the spare is written at once now
	return l.err
}

// failureReporter passes writes through to the access log's destination
// and tells the process log when they start failing and when they work
// again, once each: the access logger drops a line it cannot write (its
// request is already answered), and a full disk must not go unnoticed, nor
// flood the log with one error per line.
type failureReporter struct {
	w   io.Writer
	log *slog.Logger

	mu      sync.Mutex
	failing bool
}

func (r *failureReporter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && !r.failing:
		r.failing = true
		r.log.Error("access log: write failed; access lines are lost until it works again", "err", err)
	case err == nil && r.failing:
		r.failing = false
		r.log.Info("access log: writing again")
	}
	return n, err
}
