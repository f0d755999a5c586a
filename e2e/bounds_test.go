package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// startLimited runs `sluice serve` under an open-files limit (prlimit execs it, so
// the pid is sluice's).
func (a *allInOne) startLimited(nofile string) {
	a.t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		a.t.Fatal("prlimit is not installed: apt-get install -y util-linux")
	}
	a.proc = testenv.Start(a.t, a.t.TempDir(), prlimit, a.env, "--nofile="+nofile, sluiceBin, "serve")
	testenv.WaitHTTP(a.t, a.api+"/readyz", 30*time.Second, a.proc.Log)
}

// openFiles reads a process's soft and hard RLIMIT_NOFILE from /proc.
func openFiles(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			return strings.Join(strings.Fields(rest)[:2], " ")
		}
	}
	t.Fatalf("no open-files line in /proc/%d/limits", pid)
	return ""
}

// Go raises a process's soft open-files limit to the hard one (less one) before main
// runs; sluice says so at start and does not do it again.
func TestServeRaisesItsOpenFilesLimit(t *testing.T) {
	a := newAllInOne(t)
	a.startLimited("512:4096")
	if got := openFiles(t, a.proc.Cmd.Process.Pid); got != "4095 4096" {
		t.Errorf("sluice serve started with 512:4096 runs with %s, want 4095 4096", got)
	}
	out, _ := os.ReadFile(a.proc.Log)
	if !bytes.Contains(out, []byte("soft_limit=4095 hard_limit=4096")) {
		t.Errorf("the start log does not state the open-files limit:\n%s", tail(out, 3000))
	}
}

// from is an HTTP client whose connections come from the loopback address local (all
// of 127.0.0.0/8 is loopback on Linux).
func from(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// Under the common 1,024-file limit (soft and hard: nothing to raise), 1,100
// connections from one address, each trickling a request body a byte every 2 s, take
// at most --max-conns-per-ip descriptors: the rest are answered 429 at once, the held
// ones are cut at the body timeout, and meanwhile a client at another address reads
// /healthz and downloads a file.
func TestSlowClientsCannotTakeEveryDescriptor(t *testing.T) {
	const flood, perIP = 1100, 256
	a := newAllInOne(t, "SLUICE_BODY_TIMEOUT=10s", fmt.Sprintf("SLUICE_MAX_CONNS_PER_IP=%d", perIP), "SLUICE_DEMO=false")
	data := randomBytes(3<<20+7, 91)
	path := filepath.Join(a.dataDir, "objects", "flood", "app.bin")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a.startLimited("1024:1024")
	pid := a.proc.Cmd.Process.Pid
	if got := openFiles(t, pid); got != "1024 1024" {
		t.Fatalf("open-files limit %s, want 1024 1024", got)
	}
	apiAddr := strings.TrimPrefix(a.api, "http://")

	// The flood: every connection sends its headers and the body's first byte, then a
	// byte every 2 s; each is watched for how the server ends it.
	var refused, cut, other atomic.Int64
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var wg sync.WaitGroup
	began := time.Now()
	var lastEnd atomic.Int64
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 10 * time.Second}
	sem := make(chan struct{}, 64)
	for i := range flood {
		sem <- struct{}{}
		c, err := dialer.DialContext(ctx, "tcp", apiAddr)
		<-sem
		if err != nil {
			t.Fatalf("connection %d of the flood: %v", i, err)
		}
		fmt.Fprintf(c, "POST /api/v1/downloads HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		wg.Go(func() {
			defer c.Close()
			go func() { // the trickle, until the connection ends
				for range 500 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(2 * time.Second):
					}
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			switch {
			case err != nil:
				other.Add(1)
			case resp.StatusCode == http.StatusTooManyRequests:
				refused.Add(1)
			case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestTimeout:
				cut.Add(1)
			default:
				other.Add(1)
			}
			lastEnd.Store(int64(time.Since(began)))
		})
	}
	dialed := time.Since(began)

	// While the flood holds its connections: another address is served.
	client := from("127.0.0.2")
	resp, err := client.Get(a.api + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz from 127.0.0.2 during the flood: %v %v", err, resp)
	}
	resp.Body.Close()
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	body, _ := json.Marshal(map[string]string{"object": "flood/app.bin"})
	resp, err = client.Post(a.api+"/api/v1/downloads", "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a ticket from 127.0.0.2 during the flood: %v %v", err, resp)
	}
	var tk api.Ticket
	if err := json.NewDecoder(resp.Body).Decode(&tk); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	link := ""
	for deadline := time.Now().Add(15 * time.Second); link == "" && time.Now().Before(deadline); {
		resp, err := client.Get(a.api + "/api/v1/tickets/" + tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		var now api.Ticket
		_ = json.NewDecoder(resp.Body).Decode(&now)
		resp.Body.Close()
		if link = now.DownloadURL; link == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if link == "" {
		t.Fatal("the ticket from 127.0.0.2 was not admitted within 15 s")
	}
	resp, err = client.Get(link)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download from 127.0.0.2 during the flood: %v %v", err, resp)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || sha(got) != sha(data) {
		t.Fatalf("download from 127.0.0.2 during the flood: %d bytes, %v; want the object's %d", len(got), err, len(data))
	}
	servedAt, cutBefore := time.Since(began), cut.Load()
	if cutBefore > 0 {
		t.Errorf("127.0.0.2 was served only after the server had cut %d slow connections: the flood held it off", cutBefore)
	}

	wg.Wait()
	t.Logf("flood of %d connections from 127.0.0.1 dialed in %s; 127.0.0.2 served by %s with the process at %d descriptors; "+
		"%d refused with 429, %d cut at the body timeout, %d otherwise ended; the last ended after %s",
		flood, dialed.Round(time.Millisecond), servedAt.Round(time.Millisecond), len(fds), refused.Load(), cut.Load(), other.Load(),
		time.Duration(lastEnd.Load()).Round(time.Millisecond))
	if refused.Load() < flood-perIP || cut.Load() > perIP || other.Load() != 0 {
		t.Errorf("of %d connections from one address %d were refused, %d held until cut, %d ended otherwise; want at most %d held, the rest refused",
			flood, refused.Load(), cut.Load(), other.Load(), perIP)
	}
	if end := time.Duration(lastEnd.Load()); end > 40*time.Second {
		t.Errorf("the last slow connection ended after %s; the body timeout is 10 s", end)
	}
	out, _ := os.ReadFile(a.proc.Log)
	if bytes.Contains(out, []byte("too many open files")) {
		t.Errorf("the process ran out of descriptors:\n%s", tail(out, 3000))
	}
}
