// Package connlimit caps the connections one client address may hold open at once,
// counted when they are accepted, so that one address cannot take every file
// descriptor of a process (docs/ARCHITECTURE.md, Security and bounds).
//
// Counting at accept time, not per request: a connection costs its descriptor from
// the moment it is accepted, and a client that sends its headers slowly, or none,
// never becomes a request. A connection over the cap is answered at once with a
// minimal 429 and closed, before anything of it is read.
package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Limiter counts open connections per client address. One Limiter may be shared by
// several listeners, so that the cap holds for the process as a whole.
type Limiter struct {
	max int
	mu  sync.Mutex
	n   map[netip.Prefix]int
	// refused counts connections closed for being over the cap.
	refused uint64
}

// New returns a Limiter allowing max connections per address; max <= 0: no cap.
func New(max int) *Limiter {
	return &Limiter{max: max, n: make(map[netip.Prefix]int)}
}

// Max is the cap, 0 for none.
func (l *Limiter) Max() int { return max(l.max, 0) }

// Refused is how many connections were closed for being over the cap.
func (l *Limiter) Refused() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}

// Open is how many connections client holds open now.
func (l *Limiter) Open(client netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[clientOf(client)]
}

// clientOf names a client: its IPv4 address, or its IPv6 /64, since one host (or
// one customer) gets a whole /64 and would otherwise have 2^64 caps.
func clientOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

func (l *Limiter) take(p netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[p] >= l.max {
		l.refused++
		return false
	}
	l.n[p]++
	return true
}

func (l *Limiter) give(p netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[p]--; l.n[p] <= 0 {
		delete(l.n, p)
	}
}

// Listen wraps ln so that its connections count against l. Connections from exempt
// prefixes (the load balancers in front, whose one address stands for every client)
// are not counted.
func (l *Limiter) Listen(ln net.Listener, exempt ...netip.Prefix) net.Listener {
	if l == nil || l.max <= 0 {
		return ln
	}
	return &listener{Listener: ln, lim: l, exempt: exempt}
}

type listener struct {
	net.Listener
	lim    *Limiter
	exempt []netip.Prefix
}

// tooMany is the whole answer to a connection over the cap: a client that speaks
// HTTP sees why, and when to retry, instead of a bare reset. The body is RFC 9457
// problem details, as every other refusal; no instance, since no request was read.
const tooMany = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nConnection: close\r\nContent-Type: application/problem+json\r\nContent-Length: 336\r\n\r\n" +
	`{"type":"https://sluice.dev/problems/too_many_connections_from_address","title":"Too Many Requests","status":429,"detail":"too many connections from your address now","code":"too_many_connections_from_address","error":"too many connections from your address now","hint":"close some connections, then retry after the Retry-After delay"}` + "\n"

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || ln.isExempt(ap.Addr()) {
			return c, nil
		}
		p := clientOf(ap.Addr())
		if !ln.lim.take(p) {
			// A fresh socket's send buffer is empty: this write does not block, and the
			// deadline makes sure of it. Nothing is read, so the accept loop never waits.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write([]byte(tooMany))
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, release: sync.OnceFunc(func() { ln.lim.give(p) })}, nil
	}
}

func (ln *listener) isExempt(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ln.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// conn gives its place back once, when it closes.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}

// ReadFrom keeps sendfile(2): net/http hands a response's file to the connection's
// ReadFrom, which *net.TCPConn implements and a plain wrapper would hide.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// SyscallConn gives the socket itself, for socket options (the edge's
// TCP_NOTSENT_LOWAT).
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
