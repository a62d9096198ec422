//go:build !linux

package sockio

import "net"

// Wrap returns nc unchanged: the raw system calls are Linux only.
func Wrap(nc net.Conn) net.Conn { return nc }

// YieldCPU does nothing off Linux: the reasoning in yield_linux.go is
// about Linux's scheduler.
func YieldCPU() {}
