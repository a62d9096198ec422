//go:build !linux

package proxy

// peek is a no-op where we have no non-blocking peek: idle connections are
// assumed alive and a stale one is retried as net/http does.
func (c *h1conn) peek(fd uintptr) {}
