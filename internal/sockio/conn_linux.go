package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write make raw system calls
// (see the package comment). Everything else is the *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// One Read's state, for readOnce; readFn is built once, so a Read
	// does not allocate a closure. rmu makes concurrent Reads take
	// turns, as net.TCPConn's do.
	rmu    sync.Mutex
	rp     []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// One Write's state, for writeSome, under wmu.
	wmu     sync.Mutex
	wp      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// Wrap returns nc with raw-syscall Read and Write when it is a TCP
// connection, and nc itself otherwise.
func Wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{TCPConn: tc, rc: rc}
	c.readFn, c.writeFn = c.readOnce, c.writeSome
	return c
}

func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Read(p) // its answer on a closed connection too
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	c.rp = nil
	if err != nil {
		return 0, c.opError("read", err)
	}
	return c.rn, c.rerr
}

// readOnce is one non-blocking read(2); false asks the poller to wait for
// the socket to become readable.
func (c *Conn) readOnce(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd,
			uintptr(unsafe.Pointer(&c.rp[0])), uintptr(len(c.rp)))
		switch errno {
		case 0:
			if n == 0 {
				c.rerr = io.EOF
			}
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rerr = c.opError("read", os.NewSyscallError("read", errno))
		return true
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n := c.wn
	c.wp = nil
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, c.werr
}

// writeSome writes what the socket takes; false asks the poller to wait
// until it takes more.
func (c *Conn) writeSome(fd uintptr) bool {
	for c.wn < len(c.wp) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd,
			uintptr(unsafe.Pointer(&c.wp[c.wn])), uintptr(len(c.wp)-c.wn))
		switch errno {
		case 0:
			if n == 0 {
				c.werr = c.opError("write", io.ErrUnexpectedEOF)
				return true
			}
			c.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = c.opError("write", os.NewSyscallError("write", errno))
		return true
	}
	return true
}

// ReadFrom keeps the TCP connection's splice and sendfile paths.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.TCPConn.ReadFrom(r) }

// opError reports err as net.TCPConn's Read and Write would: a *net.OpError
// with the operation's name, whatever RawConn called it.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := errors.AsType[*net.OpError](err); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
