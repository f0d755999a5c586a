package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// Helpers for the edge's end-to-end tests (edge_*_test.go).

// link requests a ticket for object and waits for its download link.
func (s *stack) link(object string) (ticketID, url string) {
	s.t.Helper()
	tk := s.request(object)
	return tk.ID, s.follow(tk.ID, 20*time.Second)
}

// runClient runs a real download client, killing it after timeout. It returns the
// exit code (-1 when killed) and the combined output.
func runClient(t *testing.T, timeout time.Duration, name string, args ...string) (int, string) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		pkg := name
		if name == "aria2c" {
			pkg = "aria2"
		}
		t.Fatalf("%s is not installed: run scripts/deps.sh (or apt-get install -y %s)", name, pkg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if ctx.Err() != nil {
		return -1, out.String()
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return 0, out.String()
}

func fileSHA(t *testing.T, path string) (string, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read downloaded file: %v", err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), b
}

// openFDs counts the open file descriptors of a process.
func openFDs(t *testing.T, p *testenv.Process) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(p.Cmd.Process.Pid) + "/fd")
	if err != nil {
		t.Fatalf("list fds of the edge: %v", err)
	}
	return len(entries)
}

// openNonSockets counts p's open file descriptors that are not sockets: the objects it
// serves, its logs, its pipes.
func openNonSockets(t *testing.T, p *testenv.Process) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(p.Cmd.Process.Pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list fds of pid %d: %v", p.Cmd.Process.Pid, err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && !strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// clientConns counts the TCP connections open on port at p's side (any state but
// LISTEN and TIME_WAIT, which no process holds), from p's /proc/net/tcp.
func clientConns(t *testing.T, p *testenv.Process, port int) int {
	t.Helper()
	n := 0
	for _, table := range []string{"tcp", "tcp6"} {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.Cmd.Process.Pid) + "/net/" + table)
		if err != nil {
			t.Fatalf("read the TCP table of pid %d: %v", p.Cmd.Process.Pid, err)
		}
		for line := range strings.Lines(string(raw)) {
			// sl local_address rem_address st ...: addresses are hex IP:port
			f := strings.Fields(line)
			if len(f) < 4 || f[0] == "sl" {
				continue
			}
			_, local, _ := strings.Cut(f[1], ":")
			if lp, err := strconv.ParseInt(local, 16, 32); err == nil && int(lp) == port && f[3] != "0A" && f[3] != "06" {
				n++
			}
		}
	}
	return n
}

// edgeStats reads the edge's /debug/edge counters.
type edgeDebug struct {
	Streams       int64 `json:"streams"`
	Downloads     int   `json:"downloads"`
	BytesSent     int64 `json:"bytes_sent"`
	ZeroCopyBytes int64 `json:"zero_copy_bytes"`
	Goroutines    int   `json:"goroutines"`
}

func (s *stack) edgeStats() edgeDebug {
	s.t.Helper()
	// A connection of its own, closed after the answer, so that asking does not
	// change the edge's count of connections and goroutines.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(s.edgeMetricsURL + "/debug/edge")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var d edgeDebug
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		s.t.Fatalf("/debug/edge: %v", err)
	}
	return d
}

// heldSlots counts the live slots in the ledger.
func (s *stack) heldSlots() int64 {
	s.t.Helper()
	n, err := s.redis.Client(s.t).ZCount(s.t.Context(), "sluice:{adm}:slots", strconv.FormatInt(time.Now().UnixMilli(), 10), "+inf").Result()
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

// getStatus sends one GET and returns the status and Retry-After, reading no body.
func getStatus(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// fileName is the last path segment of a link: what wget saves it as.
func fileName(link string) string { return link[strings.LastIndexByte(link, '/')+1:] }

// eventually waits for a condition another process brings about (testenv.Eventually).
var eventually = testenv.Eventually
