package connlimit_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/connlimit"
)

// dialFrom connects to addr from the loopback address local (all of 127.0.0.0/8 is
// loopback on Linux).
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serve accepts on ln and holds every connection it gets until the test ends.
func serve(t *testing.T, ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	return accepted
}

func wantAccepted(t *testing.T, accepted <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not accepted")
		return nil
	}
}

// wantRefused reads the 429 a connection over the cap gets, then its end.
func wantRefused(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a connection over the cap: %v, want a 429", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a connection over the cap: %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" ||
		p.Status != http.StatusTooManyRequests || p.Code == "" || p.Error == "" {
		t.Fatalf("a connection over the cap: %s %q (%v), want problem details with a code", resp.Header.Get("Content-Type"), raw, err)
	}
}

func TestCapPerAddress(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := connlimit.New(2)
	ln := lim.Listen(inner, netip.MustParsePrefix("127.0.0.9/32"))
	t.Cleanup(func() { ln.Close() })
	addr := inner.Addr().String()
	accepted := serve(t, ln)

	dialFrom(t, "127.0.0.1", addr)
	first := wantAccepted(t, accepted)
	dialFrom(t, "127.0.0.1", addr)
	wantAccepted(t, accepted)
	if n := lim.Open(netip.MustParseAddr("127.0.0.1")); n != 2 {
		t.Fatalf("open from 127.0.0.1: %d, want 2", n)
	}
	// The third from the same address is refused; another address is not affected,
	// nor is an exempt one (a load balancer).
	wantRefused(t, dialFrom(t, "127.0.0.1", addr))
	dialFrom(t, "127.0.0.2", addr)
	wantAccepted(t, accepted)
	for range 3 {
		dialFrom(t, "127.0.0.9", addr)
		wantAccepted(t, accepted)
	}
	if lim.Refused() != 1 {
		t.Errorf("refused %d, want 1", lim.Refused())
	}
	// A connection closed gives its place back (once, however often it is closed).
	first.Close()
	first.Close()
	dialFrom(t, "127.0.0.1", addr)
	wantAccepted(t, accepted)
	wantRefused(t, dialFrom(t, "127.0.0.1", addr))
}

// A counted connection still gives the socket (socket options) and its ReadFrom
// (sendfile) to those who ask.
func TestWrappedConnKeepsTheSocket(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := connlimit.New(4).Listen(inner)
	t.Cleanup(func() { ln.Close() })
	accepted := serve(t, ln)
	dialFrom(t, "127.0.0.1", inner.Addr().String())
	c := wantAccepted(t, accepted)
	defer c.Close()
	if _, ok := c.(syscall.Conn); !ok {
		t.Error("the wrapped connection hides its socket (syscall.Conn)")
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("the wrapped connection hides ReadFrom (sendfile)")
	}
}
