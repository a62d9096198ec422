package server

import (
	"context"
	"sync"
)

// reqCtx is a fast-loop request's context. net/http gives every request a
// cancellable context and a goroutine reading the connection in the
// background, so that a client that leaves cancels it; most requests end
// long before anyone could leave, and pay for it all the same. reqCtx
// starts that watch only when someone asks: the first Done or AfterFunc
// (context.AfterFunc uses the method below, without a goroutine of its
// own). Err alone does not start it: it reports what is known.
//
// Its values are the connection's (http.LocalAddrContextKey and
// http.ServerContextKey, as under net/http); it has no deadline.
type reqCtx struct {
	context.Context // the connection's: values only
	c               *h1fastConn
	body            *h1body // nil without a body
	mu              sync.Mutex
	done            chan struct{}
	err             error
	watching        bool
	funcs           []*afterFunc
}

type afterFunc struct {
	f   func()
	ran bool // or was stopped: either way it is out of funcs
}

// closedDone is the Done channel of a context cancelled before anyone asked
// for one.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (x *reqCtx) Done() <-chan struct{} {
	x.mu.Lock()
	if x.done == nil {
		if x.err != nil {
			x.done = closedDone
		} else {
			x.done = make(chan struct{})
		}
	}
	d := x.done
	start := x.startLocked()
	x.mu.Unlock()
	if start {
		x.c.watchClient(x)
	}
	return d
}

func (x *reqCtx) Err() error {
	x.mu.Lock()
	err := x.err
	x.mu.Unlock()
	return err
}

// AfterFunc runs f once x is cancelled: on the cancelling goroutine, as a
// cancelCtx cancels its children (context.AfterFunc passes a function that
// starts its own), or on a new goroutine when x is cancelled already. Not
// on the caller's: context's propagateCancel calls this holding the child's
// lock, which f (the child's cancel) takes. stop reports whether it kept f
// from running.
func (x *reqCtx) AfterFunc(f func()) (stop func() bool) {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	x.funcs = append(x.funcs, a)
	start := x.startLocked()
	x.mu.Unlock()
	if start {
		x.c.watchClient(x)
	}
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		if a.ran {
			return false
		}
		a.ran = true
		for i, b := range x.funcs {
			if b == a {
				x.funcs = append(x.funcs[:i], x.funcs[i+1:]...)
				break
			}
		}
		return true
	}
}

// startLocked reports whether this call must start the client watch: the
// first interest in cancellation, while there still is a request.
func (x *reqCtx) startLocked() bool {
	if x.watching || x.err != nil {
		return false
	}
	x.watching = true
	return true
}

// cancel ends x with err; later calls do nothing.
func (x *reqCtx) cancel(err error) {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = err
	if x.done != nil {
		close(x.done)
	}
	funcs := x.funcs
	x.funcs = nil
	for _, a := range funcs {
		a.ran = true
	}
	x.mu.Unlock()
	for _, a := range funcs {
		a.f()
	}
}
