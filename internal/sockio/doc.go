// Package sockio gives TCP connections a Read and Write that make raw
// system calls, bypassing the Go scheduler's system-call bookkeeping.
//
// Why: a read or write on a non-blocking socket never blocks, but
// net.TCPConn makes it through syscall.Syscall, which tells the scheduler
// that the goroutine may block. When the process was idle, that wakes the
// runtime's monitor thread (sysmon) from its deep sleep, and sysmon then
// polls every 20 µs until the process is idle again. A proxy at a moderate
// request rate goes idle and wakes twice per request (waiting for the
// client, then the upstream), so every request paid two futex wake-ups and
// a few sysmon context switches on another core: about half of the proxy's
// CPU at 2000 requests per second (docs/performance.md, step 11). Waiting for readiness still goes
// through the runtime's network poller (syscall.RawConn), so deadlines,
// Close and goroutine parking behave exactly as with net.TCPConn.
package sockio
