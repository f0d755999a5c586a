package signer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// A client that keeps reading, but far below the minimum rate, loses its slot once the
// window has passed, though it never stalls long enough for the idle rule.
func TestSlowClientLosesSlot(t *testing.T) {
	const size = 256 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) {
		c.MinRate = 4 << 20
		c.MinRateWindow = 300 * time.Millisecond
		c.IdleTimeout = time.Minute
	})
	resp := h.send(t, "GET", h.url(t, bigKey))
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)

	start := time.Now()
	received, err := readPaced(t, resp.Body, 32<<10, 20*time.Millisecond) // about 1.5 MiB/s
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("slow client read %d bytes, err %v; want the stream cut", received, err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("cut after %s; the window is 300ms", took)
	}
	h.slots.waitEnd(t)
	if sent := h.slots.reported(); sent < received || sent >= size {
		t.Errorf("ledger told %d bytes, client got %d", sent, received)
	}
}

// Slowness the edge imposes itself (a bandwidth limit) is not the client's: a fast
// client of a throttled download is never cut by the minimum-rate rule.
func TestThrottledDownloadIsNotTooSlow(t *testing.T) {
	const size = 384 << 10
	h := newStreamingEdge(t, size, func(c *EdgeConfig) {
		c.MinRate = 4 << 20
		c.MinRateWindow = 200 * time.Millisecond
	})
	url := h.url(t, bigKey, func(c *token.Claims) { c.ETag = "big-v1"; c.RateBps = 256 << 10 })
	start := time.Now()
	resp := h.send(t, "GET", url)
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusOK)
	n, err := io.Copy(io.Discard, &checkedReader{t: t, r: resp.Body})
	if err != nil || n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	// 384 KiB at 256 KiB/s with a 32 KiB burst: about 1.4s.
	if took := time.Since(start); took < time.Second {
		t.Errorf("took %s; the 256 KiB/s limit was not applied", took)
	}
}

// All connections of one download share its rate: four parallel ranges go no faster
// than one stream would.
func TestDownloadRateSharedByConnections(t *testing.T) {
	const size, parts, bps = 4 << 20, 4, 2 << 20
	h := newStreamingEdge(t, size)
	url := h.url(t, bigKey, func(c *token.Claims) { c.ETag = "big-v1"; c.RateBps = bps })
	start := time.Now()
	var wg sync.WaitGroup
	for i := range int64(parts) {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", i*size/parts, (i+1)*size/parts-1))
			resp, err := h.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != size/parts {
				t.Errorf("part %d: %d bytes, %v", i, n, err)
			}
		})
	}
	wg.Wait()
	took := time.Since(start).Seconds()
	got := float64(size) / took
	t.Logf("4 connections, limit %d B/s: %.0f B/s", bps, got)
	// The bucket starts full (one burst of bps/8), so allow 15% above the rate.
	if got > bps*1.15 || got < bps*0.7 {
		t.Errorf("download went at %.0f B/s over %.2fs, want about %d", got, took, bps)
	}
}

// The node cap is shared equally by downloads, not by connections: a download with
// four connections gets no more than one with a single connection.
func TestEgressCapFairAcrossDownloads(t *testing.T) {
	const size, node = 64 << 20, 4 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) { c.EgressRate = node })
	wide := h.url(t, bigKey, func(c *token.Claims) { c.ETag = "big-v1"; c.Ticket = "wide" })
	narrow := h.url(t, bigKey, func(c *token.Claims) { c.ETag = "big-v1"; c.Ticket = "narrow" })

	const span = 2 * time.Second
	var mu sync.Mutex
	got := map[string]int64{}
	var wg sync.WaitGroup
	read := func(name, url string, part int64) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", part*(8<<20)))
		resp, err := h.client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		deadline := time.Now().Add(span)
		buf := make([]byte, 32<<10)
		for time.Now().Before(deadline) {
			n, err := resp.Body.Read(buf)
			mu.Lock()
			got[name] += int64(n)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}
	for i := range int64(4) {
		wg.Go(func() { read("wide", wide, i) })
	}
	wg.Go(func() { read("narrow", narrow, 0) })
	wg.Wait()
	total := got["wide"] + got["narrow"]
	ratio := float64(got["wide"]) / float64(got["narrow"])
	t.Logf("in %s: wide (4 conns) %d bytes, narrow (1 conn) %d bytes, total %.0f B/s", span, got["wide"], got["narrow"], float64(total)/span.Seconds())
	if ratio > 1.5 || ratio < 0.67 {
		t.Errorf("wide/narrow = %.2f, want about 1", ratio)
	}
	if rate := float64(total) / span.Seconds(); rate > node*1.3 {
		t.Errorf("node sent %.0f B/s, cap %d", rate, node)
	}
}

// Local files go out with sendfile(2), counted and reported to the ledger like any bytes.
func TestLocalFileZeroCopy(t *testing.T) {
	const size = 8<<20 + 4321
	dir := t.TempDir()
	data := patternBytes(0, size)
	if err := os.WriteFile(filepath.Join(dir, "f.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	local, err := objstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := local.Stat(t.Context(), "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *EdgeConfig) { c.Store = local })
	url := h.url(t, "f.bin", func(c *token.Claims) { c.ETag = info.ETag })

	resp, body := h.do(t, "GET", url)
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
	resp, body = h.do(t, "GET", url, "Range", "bytes=1000-2000000")
	wantStatus(t, resp, http.StatusPartialContent)
	wantBody(t, body, data[1000:2000001])
	h.slots.waitEnd(t)
	h.slots.waitEnd(t)
	if sent := h.slots.reported(); sent != size+2000001-1000 {
		t.Errorf("ledger told %d bytes, want %d", sent, size+2000001-1000)
	}
	st := h.edge.Stats()
	// net/http copies the first 512 bytes of a response itself, then hands the file over.
	if st.ZeroCopyBytes < st.BytesSent-2*512 || st.BytesSent != size+2000001-1000 {
		t.Errorf("stats %+v: want every byte but the first 512 of each response sent with sendfile", st)
	}
}

// A client that stops reading and one that reads a byte a second both lose their
// stream, and the edge's goroutines and connections go back to what they were.
func TestStalledClientsReturnToBaseline(t *testing.T) {
	const size = 64 << 20
	h := newStreamingEdge(t, size, func(c *EdgeConfig) {
		c.IdleTimeout = 300 * time.Millisecond
		c.MinRate = 64 << 10
		c.MinRateWindow = 500 * time.Millisecond
	})
	url := h.url(t, bigKey)
	// Warm up the server and the client's pool, then take the baseline.
	if resp, _ := h.do(t, "HEAD", url); resp.StatusCode != http.StatusOK {
		t.Fatal("HEAD failed")
	}
	h.client.CloseIdleConnections()
	time.Sleep(50 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	addr := h.srv.Listener.Addr().String()
	path := url[len(h.srv.URL):]
	var conns []net.Conn
	for _, perSecond := range []int{0, 0, 1, 1} { // two stalled, two at a byte a second
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		if perSecond > 0 {
			go func() {
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					time.Sleep(time.Second / time.Duration(perSecond))
				}
			}()
		}
	}
	for range conns {
		h.slots.waitEnd(t)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := h.slots.count("begin"); n != len(conns) {
		t.Errorf("%d streams began, want %d", n, len(conns))
	}
	if sent := h.slots.reported(); sent >= 4*size {
		t.Errorf("ledger told %d bytes", sent)
	}
}
