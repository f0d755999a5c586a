package signer

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat bounds the bytes the kernel holds unsent for one connection.
//
// Without it, autotuned send buffers on a fast network reach megabytes, and the socket
// reports writable again only once about half of that has drained: a client reading a
// few KB/s would leave a write blocked for minutes and be cut as idle, and the edge
// would see its progress in megabyte steps. TCP_NOTSENT_LOWAT limits only the data not
// yet sent; bytes in flight still grow with the congestion window, so fast clients on
// long links lose no throughput.
const notSentLowat = 128 << 10

// tuneConn tunes an accepted TCP connection for streaming (see notSentLowat).
func tuneConn(e *Edge, c net.Conn) {
	// syscall.Conn, not *net.TCPConn: the listener may wrap its connections (the
	// per-address cap, shared/connlimit) and still give the socket.
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat); err != nil {
			e.log.Debug("set TCP_NOTSENT_LOWAT", "err", err)
		}
	})
}
