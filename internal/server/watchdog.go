package server

import (
	"sync"
	"time"
)

// watchdog enforces the slow-client limits of the requests that cannot
// use connection deadlines (HTTP/2 streams, and HTTP/1 when the server's
// own ReadTimeout or WriteTimeout owns the deadlines). A request's reads
// and writes only note when they began and ended (two atomic stores); one
// timer per server looks at the registered requests every tick and cuts
// off those whose read or write has been blocked for its limit.
//
// A timer per request, reset around every write, did the same at a cost of
// about 1 µs per HTTP/2 request. The price is precision: a stall is cut
// off between limit and limit+tick after it began, and tick is at most an
// eighth of the limit (slackFor).
type watchdog struct {
	th   *timeoutHandler
	tick time.Duration

	mu    sync.Mutex
	head  *reqWatch // registered requests, a doubly linked list
	armed bool      // the timer is set; it keeps going while head != nil
	timer *time.Timer
}

func newWatchdog(th *timeoutHandler) *watchdog {
	d := &watchdog{th: th}
	// The finer of the two limits' slacks, so neither is overshot by
	// more than an eighth.
	d.tick = time.Duration(max(th.readSlack, th.writeSlack))
	if th.read > 0 && th.write > 0 {
		d.tick = time.Duration(min(th.readSlack, th.writeSlack))
	}
	d.tick = max(d.tick, time.Millisecond)
	d.timer = time.AfterFunc(time.Hour, d.check)
	d.timer.Stop()
	return d
}

// add registers g until remove; the first registration arms the timer.
func (d *watchdog) add(g *reqWatch) {
	d.mu.Lock()
	g.next = d.head
	if d.head != nil {
		d.head.prev = g
	}
	d.head = g
	if !d.armed {
		d.armed = true
		d.timer.Reset(d.tick)
	}
	d.mu.Unlock()
}

func (d *watchdog) remove(g *reqWatch) {
	d.mu.Lock()
	if g.prev != nil {
		g.prev.next = g.next
	} else {
		d.head = g.next
	}
	if g.next != nil {
		g.next.prev = g.prev
	}
	g.prev, g.next = nil, nil
	d.mu.Unlock()
}

// check runs on the timer: it fires the watches that are due and re-arms
// while any request is registered, so an idle server has no timer
// running and no goroutine.
func (d *watchdog) check() {
	now := monoNow()
	read, write := int64(d.th.read), int64(d.th.write)
	var due []*reqWatch
	d.mu.Lock()
	for g := d.head; g != nil; g = g.next {
		if s := g.readSince.Load(); s != 0 && read > 0 && now-s >= read && g.readSince.CompareAndSwap(s, 0) {
			due = append(due, g)
			g.readDue.Store(true)
		}
		if s := g.writeSince.Load(); s != 0 && write > 0 && now-s >= write && g.writeSince.CompareAndSwap(s, 0) {
			due = append(due, g)
			g.writeDue.Store(true)
		}
	}
	if d.head != nil {
		d.timer.Reset(d.tick)
	} else {
		d.armed = false
	}
	d.mu.Unlock()
	// Each on its own goroutine, as the timers did: cutting off an HTTP/2
	// stream waits for its connection's serve loop, and one busy
	// connection must not delay the others.
	for _, g := range due {
		go g.fire()
	}
}
