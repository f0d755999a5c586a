package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
)

// redisProxy sits between one process and Redis and can hold back the first command
// that carries a marker (a script's function name or SHA-1), so a test can
// stop a process at a chosen point of its work, e.g. between a grant and the
// publication of its link, deterministically and without any hook in the product.
type redisProxy struct {
	ln      net.Listener
	markers [][]byte
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed once a marked command is held
	release chan struct{} // closed to let it through
	answer  bytes.Buffer  // what Redis answered on the held command's connection after it
}

func startRedisProxy(t *testing.T, target string, markers ...[]byte) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, markers: markers, armed: true, held: make(chan struct{}), release: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.letGo()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c, target) })
		}
	})
	return p
}

// answered returns what Redis answered to the held command (and after it, on its
// connection).
func (p *redisProxy) answered() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answer.String()
}

func (p *redisProxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *redisProxy) letGo() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

func (p *redisProxy) serve(c net.Conn, target string) {
	defer c.Close()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	heldHere := make(chan struct{})
	answers := make(chan struct{})
	go func() { // Redis -> client; keeps reading after the client left, for answered()
		defer close(answers)
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				select {
				case <-heldHere:
					p.mu.Lock()
					p.answer.Write(buf[:min(n, 1024)])
					p.mu.Unlock()
				default:
				}
				_, _ = c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() { // the client is gone: let Redis finish answering what it was sent
		_ = up.(*net.TCPConn).CloseWrite()
		select {
		case <-answers:
		case <-time.After(3 * time.Second):
		}
	}()
	buf := make([]byte, 64<<10)
	var tail []byte // the end of the previous read, for markers cut in two
	for {
		n, err := c.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if p.matches(append(tail, chunk...)) {
				close(heldHere)
				close(p.held)
				<-p.release
			}
			if _, werr := up.Write(chunk); werr != nil {
				return
			}
			tail = append(tail[:0], chunk[max(0, n-128):]...)
		}
		if err != nil {
			return
		}
	}
}

// matches reports whether b holds a marker while the proxy is armed, disarming it.
func (p *redisProxy) matches(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.armed {
		return false
	}
	for _, m := range p.markers {
		if bytes.Contains(b, m) {
			p.armed = false
			return true
		}
	}
	return false
}

// scriptMarkers identifies one admission script (name: its file, "ready.lua") on the
// wire: the function FCALL names, and the SHA-1 that EVALSHA sends where Redis has no
// functions. (Not its source: the library's FUNCTION LOAD holds every script's.)
func scriptMarkers(t *testing.T, name string) [][]byte {
	t.Helper()
	script := "admission." + strings.TrimSuffix(name, ".lua")
	var markers [][]byte
	for fn, of := range admission.Functions() {
		if of == script {
			markers = append(markers, []byte(fn))
		}
	}
	s, ok := admission.Scripts()[script]
	if !ok || len(markers) != 1 {
		t.Fatalf("no admission script %s", name)
	}
	return append(markers, []byte(s.Hash()))
}

// slowClient has a small receive buffer, so that a client that reads slowly really
// holds the edge back (otherwise the kernel's buffers take whole small objects and the
// edge is done long before the client).
func slowClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// readSlowly reads body at about bps bytes per second, in small steps, until the
// body ends, stop bytes were read (0: no stop), or ctx ends. It returns the bytes read.
func readSlowly(ctx context.Context, body io.Reader, bps int, stop int64) (int64, error) {
	const step = 8 << 10
	buf := make([]byte, step)
	pause := time.Duration(float64(step) / float64(bps) * float64(time.Second))
	var n int64
	for {
		k, err := body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if stop > 0 && n >= stop {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(pause * time.Duration(k) / step):
		}
	}
}
