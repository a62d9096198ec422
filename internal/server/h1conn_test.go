package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testkit"
)

// A goroutine a handler left behind may ask for its request's Done late:
// after the handler returned, or while the next request is served. Its
// background read would take bytes of the next request from under the
// connection's reader, so it must not start.
func TestConnReaderRefusesLateBackgroundRead(t *testing.T) {
	nc, client := testkit.TCPPair(t)
	c := &h1fastConn{nc: nc}
	c.cr.c = c
	running := func() bool {
		c.cr.mu.Lock()
		defer c.cr.mu.Unlock()
		return c.cr.inRead
	}

	first := &reqCtx{c: c}
	c.cr.begin(first)
	c.cr.end()
	c.cr.startBackground(first)
	if running() {
		t.Fatal("a background read started for a request whose handler had returned")
	}

	next := &reqCtx{c: c}
	c.cr.begin(next)
	c.cr.startBackground(first)
	if running() {
		t.Fatal("the previous request's late Done started a background read during the next request")
	}
	c.cr.startBackground(next)
	if !running() {
		t.Fatal("the running request's own watch did not start")
	}
	c.cr.end() // aborts the read and waits for it
	if running() {
		t.Fatal("end left the background read running")
	}

	// The connection still reads what the client sends next, in order.
	if _, err := client.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 3)
	for n := 0; n < len(got); {
		m, err := c.cr.Read(got[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if string(got) != "GET" {
		t.Fatalf("read %q after the watches, want %q", got, "GET")
	}
}

// context.WithCancel on a request context calls its AfterFunc holding the
// new child's lock, with the child's cancel as the function: when the
// request ended just before, running it on the caller's goroutine would
// deadlock.
func TestReqCtxAfterFuncWhenCancelledDoesNotRunOnCaller(t *testing.T) {
	x := &reqCtx{}
	x.cancel(context.Canceled)
	var mu sync.Mutex // the caller's lock, as propagateCancel holds it
	ran := make(chan struct{})
	calls := 0
	mu.Lock()
	stop := x.AfterFunc(func() {
		mu.Lock()
		calls++
		mu.Unlock()
		close(ran)
	})
	mu.Unlock()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc on a cancelled context never ran its function")
	}
	if stop() {
		t.Error("stop reported it kept a function from running that ran")
	}
	mu.Lock()
	if calls != 1 {
		t.Errorf("the function ran %d times, want once", calls)
	}
	mu.Unlock()
	// And through the context package, many times, against the end of the
	// request racing the child's set-up.
	nc, _ := testkit.TCPPair(t)
	c := &h1fastConn{nc: nc}
	c.cr.c = c
	for range 200 {
		y := &reqCtx{Context: context.Background(), c: c}
		done := make(chan struct{})
		go func() { y.cancel(context.Canceled); close(done) }()
		child, cancel := context.WithCancel(y)
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a child of a cancelled request context was not cancelled")
		}
		cancel()
		<-done
	}
}
