package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// sparseObject makes a large object on the local store without writing its bytes.
func (s *stack) sparseObject(key string, size int64) {
	s.t.Helper()
	path := filepath.Join(s.dataDir, "objects", filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		s.t.Fatal(err)
	}
	f.Close()
}

// Eight connections on one link are fine (parallel ranges), a ninth gets 429; all of
// them hold the one slot of the ticket, and a resume within the link's life takes no
// new slot and never goes back to the queue.
func TestConnectionsPerToken(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1})
	s.dumpLogsOnFailure()
	const size = 4 << 30
	s.sparseObject("big.iso", size)
	s.startAll(1)
	id, link := s.link("big.iso")

	// Each response is left unread: the connection stays open, its stream blocked.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(offset int64) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, link, nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var open []*http.Response
	for i := range 8 {
		resp := get(int64(i) * (size / 8))
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("connection %d: %d, want 206", i+1, resp.StatusCode)
		}
		open = append(open, resp)
	}
	ninth := get(0)
	body, _ := io.ReadAll(ninth.Body)
	ninth.Body.Close()
	if ninth.StatusCode != http.StatusTooManyRequests || ninth.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "hint") {
		t.Fatalf("ninth connection: %d Retry-After=%q %s, want 429 with Retry-After and a hint", ninth.StatusCode, ninth.Header.Get("Retry-After"), body)
	}
	if n := s.heldSlots(); n != 1 {
		t.Errorf("%d slots held by one ticket with 8 connections, want 1", n)
	}
	// One connection closes: a new one is accepted.
	open[0].Body.Close()
	eventually(t, 5*time.Second, "a connection accepted after one closed", func() bool {
		resp := get(0)
		if resp.StatusCode == http.StatusPartialContent {
			open[0] = resp
			return true
		}
		resp.Body.Close()
		return false
	})
	// Every connection goes; the client resumes within the link's life.
	for _, r := range open {
		r.Body.Close()
	}
	eventually(t, 5*time.Second, "the edge notices the closed connections", func() bool { return s.edgeStats().Streams == 0 })
	tk := s.ticket(id)
	if tk.Status != "streaming" || s.heldSlots() != 1 {
		t.Fatalf("after the connections closed: ticket %q, %d slots; want it still streaming on its one slot", tk.Status, s.heldSlots())
	}
	resp := get(size - 1<<20)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || err != nil || n != 1<<20 {
		t.Fatalf("resume: %d, %d bytes, %v", resp.StatusCode, n, err)
	}
	if tk := s.ticket(id); tk.Status == "queued" || s.heldSlots() != 1 {
		t.Fatalf("after the resume: ticket %q, %d slots", tk.Status, s.heldSlots())
	}
}

// rateRun downloads link with a real client, watching the ticket while it runs, and
// returns the rate the client saw.
func rateRun(t *testing.T, s *stack, id string, size int64, name string, args ...string) float64 {
	t.Helper()
	var (
		maxStreams atomic.Int64
		polls      []api.Ticket
		finished   atomic.Bool
		wg         sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			tk := s.ticket(id)
			if !finished.Load() {
				polls = append(polls, tk)
			}
			maxStreams.Store(max(maxStreams.Load(), s.edgeStats().Streams))
		}
	})
	start := time.Now()
	code, log := runClient(t, 60*time.Second, name, args...)
	took := time.Since(start)
	finished.Store(true)
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("%s exit %d: %s", name, code, log)
	}
	// Progress while streaming: the ticket says streaming, with bytes_sent growing,
	// and is never done before the client has the whole file.
	var last int64
	growing := 0
	for _, p := range polls {
		if p.Status == "done" {
			t.Fatalf("ticket done at %d bytes sent while %s was still downloading", p.BytesSent, name)
		}
		if p.Status == "streaming" && p.BytesSent > last && p.BytesSent < size {
			growing++
			last = p.BytesSent
		}
	}
	if growing < 3 {
		t.Errorf("bytes_sent grew only %d times in %d polls during a %s download: %+v", growing, len(polls), took, polls)
	}
	if done := s.waitStatus(id, "done", 10*time.Second); done.BytesSent < size {
		t.Errorf("done with %d of %d bytes sent", done.BytesSent, size)
	}
	if strings.HasPrefix(name, "aria2") && maxStreams.Load() < 2 {
		t.Errorf("aria2c opened at most %d connection at once; the test expects parallel ranges", maxStreams.Load())
	}
	return float64(size) / took.Seconds()
}

// A per-download limit of 1 MiB/s gives 1 MiB/s, within 10%, for one connection and
// for eight (aria2c -x8), and a tenant's own rate overrides it.
func TestBandwidthLimit(t *testing.T) {
	const limit = 1 << 20
	admin := "slk_e2e_admin_key_for_rates"
	s := newStack(t, stackOptions{Env: []string{
		fmt.Sprintf("SLUICE_DOWNLOAD_RATE=%d", limit),
		"SLUICE_STREAM_LEASE=3s", // renew (and report progress) every second
		"SLUICE_ADMIN_KEY=" + admin,
	}})
	s.dumpLogsOnFailure()
	const size = 10 << 20
	data := randomBytes(size, 41)
	s.putObject("ten.bin", data)
	s.startAll(1)
	dir := t.TempDir()

	id, link := s.link("ten.bin")
	got := rateRun(t, s, id, size, "curl", "-sSf", "-o", filepath.Join(dir, "curl.bin"), link)
	t.Logf("curl: %.0f B/s (limit %d)", got, limit)
	if got < limit*0.9 || got > limit*1.1 {
		t.Errorf("curl downloaded at %.0f B/s, want %d ± 10%%", got, limit)
	}

	id, link = s.link("ten.bin")
	got = rateRun(t, s, id, size, "aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none", "-d", dir, "-o", "aria.bin", link)
	t.Logf("aria2c -x8: %.0f B/s (limit %d)", got, limit)
	if got < limit*0.9 || got > limit*1.1 {
		t.Errorf("aria2c -x8 downloaded at %.0f B/s, want %d ± 10%% (the limit is per download, not per connection)", got, limit)
	}
	if sum, _ := fileSHA(t, filepath.Join(dir, "aria.bin")); sum != sha(data) {
		t.Error("aria2c's throttled file does not match")
	}

	// The tenant's own rate, set at runtime, goes into the next link.
	req, _ := http.NewRequest(http.MethodPut, s.ingressURL+"/api/v1/admin/limits",
		strings.NewReader(`{"tenants":{"public":{"rate_bps":4194304}}}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"rate_bps":4194304`)) {
		t.Fatalf("PUT limits: %d %s", resp.StatusCode, b)
	}
	_, link = s.link("ten.bin")
	start := time.Now()
	if code, log := runClient(t, 60*time.Second, "curl", "-sSf", "-o", filepath.Join(dir, "tenant.bin"), link); code != 0 {
		t.Fatalf("curl exit %d: %s", code, log)
	}
	got = size / time.Since(start).Seconds()
	t.Logf("tenant rate 4 MiB/s: %.0f B/s", got)
	if got < 4<<20*0.85 || got > 4<<20*1.15 {
		t.Errorf("with the tenant's rate of 4 MiB/s the download went at %.0f B/s", got)
	}
}

// A client that stops reading loses its slot after the idle timeout, one that reads
// too slowly after the minimum-rate window, and the edge's file descriptors and
// goroutines come back to where they were.
func TestStalledAndSlowClients(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1, Env: []string{
		"SLUICE_IDLE_TIMEOUT=2s",
		"SLUICE_MIN_RATE=1048576", // 1 MiB/s
		"SLUICE_MIN_RATE_WINDOW=2s",
		"SLUICE_RESUME_GRACE=1s",
	}})
	s.dumpLogsOnFailure()
	s.sparseObject("big.iso", 4<<30)
	s.putObject("small.txt", []byte("next in line"))
	edge := s.start("edge")
	s.start("worker")
	s.start("ingress")

	// Baseline after one complete download, so that lazily started goroutines count.
	_, warm := s.link("small.txt")
	if sum, _, _ := download(t, warm); sum != sha([]byte("next in line")) {
		t.Fatal("warm-up download failed")
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	files, goroutines := openNonSockets(t, edge), s.edgeStats().Goroutines

	for _, tc := range []struct {
		name string
		read func(c net.Conn)
		rule string // what the edge logs when it ends the stream
	}{
		{"stalled", func(net.Conn) {}, "i/o timeout"},
		{"256 KiB/s", func(c net.Conn) {
			buf := make([]byte, 8<<10)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				time.Sleep(30 * time.Millisecond)
			}
		}, "below the minimum rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, link := s.link("big.iso")
			queued := s.request("small.txt") // waits for the one slot
			addr, path, _ := strings.Cut(strings.TrimPrefix(link, "http://"), "/")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
			fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
			go tc.read(c)
			start := time.Now()

			// The stream ends, the slot lapses after the resume grace, the next
			// ticket gets it.
			s.waitStatus(id, "expired", 30*time.Second)
			t.Logf("%s client's ticket expired after %s", tc.name, time.Since(start).Round(100*time.Millisecond))
			if log, _ := os.ReadFile(edge.Log); !bytes.Contains(log, []byte(tc.rule)) {
				t.Errorf("the edge log does not say the stream ended for %q", tc.rule)
			}
			next := s.follow(queued.ID, 10*time.Second)
			if sum, _, _ := download(t, next); sum != sha([]byte("next in line")) {
				t.Fatal("the next ticket's download failed")
			}
		})
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	// Files (the objects it opened) and client connections are counted apart from the
	// edge's sockets to Redis and NATS, whose pools may keep one more idle connection
	// after a busy moment.
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.edgeStats()
		f, conns := openNonSockets(t, edge), clientConns(t, edge, s.edgePort)
		if f <= files && conns == 0 && st.Goroutines <= goroutines && st.Streams == 0 {
			break
		}
		last = fmt.Sprintf("%d files (was %d), %d client connections, %d goroutines (was %d), %d streams", f, files, conns, st.Goroutines, goroutines, st.Streams)
		if time.Now().After(deadline) {
			t.Fatalf("the edge did not come back within 10 s: %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
