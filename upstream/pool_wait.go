package upstream

import (
	"fmt"
	"time"
)

// queuePoll bounds how long a waiter sleeps without re-checking. Releases in
// this pool wake waiters at once; the poll catches slots freed by another
// pool sharing the address (the in-flight count is per address).
const queuePoll = 10 * time.Millisecond

// wait is the slow path of Select when every healthy upstream is full.
func (p *Pool) wait(s *Selection) (*Upstream, error) {
	var done <-chan struct{}
	if s.Request != nil {
		done = s.Request.Context().Done()
	}
	deadline := time.NewTimer(p.queueTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(queuePoll)
	defer poll.Stop()
	for {
		ch := p.enterWait()
		// Check again after registering, so a Release between our last
		// look and now cannot be missed.
		u, full := p.tryPick(s)
		if u != nil || !full {
			p.leaveWait()
			if u == nil {
				return nil, ErrNoUpstream
			}
			return u, nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			p.leaveWait()
			return nil, errAllFull
		case <-done:
			p.leaveWait()
			return nil, fmt.Errorf("%w while waiting for a free upstream: %w", ErrNoUpstream, s.Request.Context().Err())
		}
		p.leaveWait()
	}
}

func (p *Pool) enterWait() <-chan struct{} {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	if p.waitCh == nil {
		p.waitCh = make(chan struct{})
	}
	p.waiters.Add(1)
	return p.waitCh
}

func (p *Pool) leaveWait() { p.waiters.Add(-1) }

// wake lets every waiter look again; one of them gets the freed slot.
func (p *Pool) wake() {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	if p.waitCh != nil {
		close(p.waitCh)
		p.waitCh = nil
	}
}
