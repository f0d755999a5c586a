package signer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
)

const bigKey = "big.bin"

// newStreamingEdge serves a patterned object of size bytes, renewing every 5ms.
func newStreamingEdge(t testing.TB, size int64, configure ...func(*EdgeConfig)) *harness {
	t.Helper()
	configure = append([]func(*EdgeConfig){func(c *EdgeConfig) { c.RenewEvery = 5 * time.Millisecond }}, configure...)
	h := newHarness(t, configure...)
	h.store.putPattern(bigKey, "big-v1", size)
	return h
}

// checkedReader reads a patterned object and fails the test on the first wrong byte.
type checkedReader struct {
	t   testing.TB
	r   io.Reader
	off int64
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !bytes.Equal(p[:n], patternBytes(c.off, int64(n))) {
		c.t.Fatalf("wrong bytes at offset %d", c.off)
	}
	c.off += int64(n)
	return n, err
}

// readPaced reads body to the end in steps of step bytes with a pause between them,
// so that the stream lasts long enough for the edge to renew.
func readPaced(t testing.TB, body io.Reader, step int64, pause time.Duration) (int64, error) {
	t.Helper()
	cr := &checkedReader{t: t, r: body}
	for {
		n, err := io.CopyN(io.Discard, cr, step)
		if err == io.EOF {
			return cr.off, nil
		}
		if err != nil {
			return cr.off, err
		}
		if n < step {
			return cr.off, nil
		}
		time.Sleep(pause)
	}
}

func TestSlotLostMidStream(t *testing.T) {
	const size = 64 << 20
	h := newStreamingEdge(t, size)
	h.slots.renewErr = func(n int) error {
		if n >= 2 {
			return errNotHeld
		}
		return nil
	}
	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)

	// Take nothing until the edge has stopped: the write it is blocked in must end too.
	end := h.slots.waitEnd(t)
	received, err := io.Copy(io.Discard, &checkedReader{t: t, r: resp.Body})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %d of %d bytes, err %v; want a truncated body", received, size, err)
	}
	if received >= size {
		t.Fatalf("the whole object arrived after the slot was lost")
	}
	calls := h.slots.snapshot()
	if n := h.slots.count("renew"); n != 2 {
		t.Errorf("%d renewals, want 2 (the stream must stop at the first refusal): %v", n, calls)
	}
	if n := h.slots.count("end"); n != 1 {
		t.Errorf("%d EndStream calls, want 1", n)
	}
	// The refused renewal's bytes are not lost: EndStream reports them.
	if sent := h.slots.reported(); sent < received || sent > size {
		t.Errorf("ledger told %d bytes, client received %d (EndStream %d)", sent, received, end.sent)
	}
}

func TestClientGoneMidStream(t *testing.T) {
	const size = 64 << 20
	h := newStreamingEdge(t, size)
	resp := h.send(t, "GET", h.url(t, bigKey))
	wantStatus(t, resp, http.StatusOK)
	received, err := io.CopyN(io.Discard, &checkedReader{t: t, r: resp.Body}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // hangs up: the body was not read to the end

	h.slots.waitEnd(t)
	if n := h.slots.count("end"); n != 1 {
		t.Errorf("%d EndStream calls, want 1", n)
	}
	if sent := h.slots.reported(); sent < received || sent >= size {
		t.Errorf("ledger told %d bytes; the client took %d of %d and left", sent, received, size)
	}
}

func TestStalledClientEndsStream(t *testing.T) {
	const size = 64 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) { c.IdleTimeout = 100 * time.Millisecond })
	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)

	// The client holds the connection open and reads nothing: the slot must come back.
	end := h.slots.waitEnd(t)
	if sent := h.slots.reported(); sent >= size {
		t.Errorf("ledger told %d bytes of %d to a client that read none (EndStream %d)", sent, size, end.sent)
	}
	if _, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("stalled client's body ended with %v, want truncated", err)
	}
}

// A ledger that cannot be reached does not stop a running download, up to RenewGrace.
func TestLedgerOutageWithinGrace(t *testing.T) {
	const size = 8 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) { c.RenewGrace = time.Hour })
	h.slots.renewErr = func(int) error { return errors.New("redis: connection refused") }
	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)
	received, err := readPaced(t, resp.Body, 1<<20, 20*time.Millisecond)
	if err != nil || received != size {
		t.Fatalf("read %d of %d bytes: %v", received, size, err)
	}
	end := h.slots.waitEnd(t)
	if h.slots.count("renew") == 0 {
		t.Fatal("no renewal was tried: the test proves nothing")
	}
	if end.sent != size {
		t.Errorf("EndStream reported %d bytes, want all %d (no renewal got through)", end.sent, size)
	}
}

func TestLedgerOutagePastGrace(t *testing.T) {
	const size = 64 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) { c.RenewGrace = 20 * time.Millisecond })
	h.slots.renewErr = func(int) error { return errors.New("redis: connection refused") }
	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)
	h.slots.waitEnd(t)
	received, err := io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || received >= size {
		t.Fatalf("read %d of %d bytes, err %v; want a truncated body", received, size, err)
	}
}

// A 256 MiB download goes through with the heap staying small: the object is never
// held in memory, only one copy buffer is.
func TestLargeObjectFlatMemory(t *testing.T) {
	const (
		size    = 256 << 20
		maxHeap = 32 << 20
	)
	h := newStreamingEdge(t, size, func(c *EdgeConfig) { c.RenewEvery = 50 * time.Millisecond })
	runtime.GC()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var peak uint64
	wg.Go(func() {
		var m runtime.MemStats
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)
	received, err := io.CopyBuffer(io.Discard, &checkedReader{t: t, r: resp.Body}, make([]byte, 256<<10))
	close(stop)
	wg.Wait()
	if err != nil || received != size {
		t.Fatalf("read %d of %d bytes: %v", received, size, err)
	}
	h.slots.waitEnd(t)
	if sent := h.slots.reported(); sent != size {
		t.Errorf("ledger told %d bytes, want %d", sent, size)
	}
	if peak > maxHeap {
		t.Errorf("heap peaked at %d MiB streaming %d MiB, want under %d MiB", peak>>20, size>>20, maxHeap>>20)
	}
	t.Logf("heap peak %.1f MiB", float64(peak)/(1<<20))
}

// Ranges of one object fetched in parallel, as aria2c does, add up to the object.
func TestParallelRangesReassemble(t *testing.T) {
	const size, parts = 4<<20 + 12345, 4
	h := newStreamingEdge(t, size)
	url := h.url(t, bigKey)
	chunk := int64(size / parts)
	got := make([][]byte, parts)
	var wg sync.WaitGroup
	for i := range int64(parts) {
		last := (i+1)*chunk - 1
		if i == parts-1 {
			last = size - 1
		}
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", i*chunk, last))
			resp, err := h.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent {
				t.Errorf("part %d: status %d", i, resp.StatusCode)
			}
			got[i], err = io.ReadAll(resp.Body)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if !bytes.Equal(bytes.Join(got, nil), patternBytes(0, size)) {
		t.Fatal("the parts do not reassemble into the object")
	}
	// One hold per client connection, not per request: a part whose request found
	// another's connection idle shares its hold, so there are up to parts of them,
	// each ended once.
	deadline := time.Now().Add(10 * time.Second)
	for h.slots.count("end") < h.slots.count("begin") || h.slots.reported() != size {
		if time.Now().After(deadline) {
			t.Fatalf("%d holds began, %d ended; the ledger was told %d bytes, want %d",
				h.slots.count("begin"), h.slots.count("end"), h.slots.reported(), size)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if begun := h.slots.count("begin"); begun < 1 || begun > parts {
		t.Errorf("%d holds for %d parts", begun, parts)
	}
}

// An end the ledger surely did not take (it was wiped and not rebuilt yet, or Redis
// refused the connection) is made again: lost, the ticket would look live and a
// rebuilt ledger would admit it again behind a link nobody holds. An end that may
// have run (a timeout) is not repeated, so no byte is counted twice.
func TestEndRetriedWhileTheLedgerCannotHaveTakenIt(t *testing.T) {
	for name, c := range map[string]struct {
		err  error
		ends int
	}{
		"no generation":      {fmt.Errorf("end stream of ticket t-1: %w, being rebuilt", admission.ErrNoGeneration), 3},
		"connection refused": {fmt.Errorf("end: %w: %w", admission.ErrUnavailable, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), 3},
		"timed out":          {fmt.Errorf("end: %w: %w", admission.ErrUnavailable, context.DeadlineExceeded), 1},
	} {
		t.Run(name, func(t *testing.T) {
			h, data := newTestEdge(t)
			h.slots.endErr = func(n int) error {
				if n <= 2 {
					return c.err
				}
				return nil
			}
			resp, body := h.do(t, "GET", h.url(t, testKey))
			wantStatus(t, resp, http.StatusOK)
			wantBody(t, body, data)
			for deadline := time.Now().Add(5 * time.Second); h.slots.count("end") < c.ends && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // and no more
			if n := h.slots.count("end"); n != c.ends {
				t.Fatalf("%d EndStream calls, want %d", n, c.ends)
			}
			if c.ends > 1 {
				if sent := h.slots.reported(); sent != int64(len(data)) {
					t.Errorf("the ledger took %d bytes, the client received %d", sent, len(data))
				}
			}
		})
	}
}
