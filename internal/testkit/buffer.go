// Package testkit holds what the tests of several packages share. Only
// tests import it.
package testkit

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer that a server's goroutines may write while
// the test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
