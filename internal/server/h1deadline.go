package server

import (
	"sync"
	"time"
)

// connDeadline is one side (read or write) of a fast-loop connection's
// deadline, as last set. Moving a deadline updates a runtime timer under a
// lock; a keep-alive connection moved its read deadline for every idle wait
// and its write deadline twice per response. With what was set on record,
// a move by less than the limit's slack (slackFor: at most a second) is
// skipped, the way the slow-client watch coarsens its own deadlines: a
// limit may then fire up to that slack early, never late.
type connDeadline struct {
	mu sync.Mutex // setting and recording are one step: the record never lies
	at time.Time  // zero: none
}

// set moves the deadline to t (zero: none) with setter, the connection's
// SetReadDeadline or SetWriteDeadline.
func (d *connDeadline) set(setter func(time.Time) error, t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = t
	return setter(t)
}

// extend moves the deadline to t unless the one in place is at most slack
// earlier than t: close enough to keep.
func (d *connDeadline) extend(setter func(time.Time) error, t time.Time, slack time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.at.IsZero() && !d.at.After(t) && t.Sub(d.at) < slack {
		return nil
	}
	d.at = t
	return setter(t)
}
