package proxy

import (
	"syscall"
	"unsafe"
)

// peek runs on the connection's descriptor: a non-blocking MSG_PEEK read
// that finds EOF, a reset, or unsolicited bytes without consuming anything.
func (c *h1conn) peek(fd uintptr) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
		uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		// Nothing to read: the connection is idle, as it should be.
	default:
		// EOF (n == 0), an error, or bytes the upstream had no reason
		// to send: not safe to reuse.
		_ = n
		c.peekDead = true
	}
}
