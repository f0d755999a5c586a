package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/client"
)

// outageServer is an ingress and an edge in one httptest server that fail the way
// a Redis blip and a storage blip make them fail, on demand: what a real server
// cannot be made to do at a chosen request.
type outageServer struct {
	t    *testing.T
	data []byte
	url  string

	mu         sync.Mutex
	pollFails  []func(http.ResponseWriter) // how the next polls of the ticket fail
	headFails  int                         // HEADs of the link answered 503 before it works
	polls      int
	creates    int
	cancels    int
	relinks    int // asks for the link on a live edge
	otherPaths []string
}

func newOutageServer(t *testing.T, data []byte) *outageServer {
	s := &outageServer{t: t, data: data}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func unavailable(status int, code string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": "the admission ledger (Redis) is unavailable", "code": code})
	}
}

func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
	conn.Close()
}

func (s *outageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ticket := func(status string) {
		tk := client.Ticket{ID: "T", Object: "rel/app.bin", Status: status, Size: int64(len(s.data))}
		if status == client.StatusReady {
			tk.DownloadURL = s.url + "/d/tok/app.bin"
		} else {
			tk.Position = 1
			w.Header().Set("Retry-After", "1")
		}
		if r.Method == http.MethodPost && r.URL.Path == "/api/v1/downloads" {
			w.WriteHeader(http.StatusAccepted)
		}
		json.NewEncoder(w).Encode(tk)
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/downloads":
		s.creates++
		ticket(client.StatusQueued)
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/tickets/T":
		s.polls++
		if len(s.pollFails) > 0 {
			fail := s.pollFails[0]
			s.pollFails = s.pollFails[1:]
			fail(w)
			return
		}
		ticket(client.StatusReady)
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/tickets/T/link":
		s.relinks++ // its edge is live: the same link
		ticket(client.StatusReady)
	case r.Method == http.MethodDelete && r.URL.Path == "/api/v1/tickets/T":
		s.cancels++
		ticket(client.StatusCanceled)
	case strings.HasPrefix(r.URL.Path, "/api/v1/objects/"):
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "never published", "code": "object_not_found"})
	case r.URL.Path == "/d/tok/app.bin":
		if r.Method == http.MethodHead && s.headFails > 0 {
			s.headFails--
			w.Header().Set("Retry-After", "0")
			http.Error(w, `{"error":"storage unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "app.bin", time.Time{}, bytes.NewReader(s.data))
	default:
		s.otherPaths = append(s.otherPaths, r.Method+" "+r.URL.Path)
		http.NotFound(w, r)
	}
}

// A get waiting in line rides out a Redis outage (503, 500, a reset connection) on
// the same ticket, then an outage of the edge's storage (503 on the link past the
// downloader's own retries), and saves the right bytes; the user is told once per
// outage.
func TestGetRidesOutOutagesOnItsTicket(t *testing.T) {
	data := bytes.Repeat([]byte("sluice outage "), 50_000)
	s := newOutageServer(t, data)
	s.pollFails = []func(http.ResponseWriter){
		unavailable(503, "redis_unavailable"), unavailable(500, "internal"), resetConn, unavailable(503, "redis_unavailable"),
	}
	s.headFails = 6 // more than the downloader's own four attempts

	dir := t.TempDir()
	out := filepath.Join(dir, "app.bin")
	cfg := &getConfig{
		clientConfig: clientConfig{Server: s.url, Timeout: 5 * time.Second},
		Output:       out, Connections: 2, Verify: "auto", Interval: time.Hour,
		StallTimeout: 10 * time.Second, retryFirstWait: 5 * time.Millisecond,
	}
	var stdout, stderr bytes.Buffer
	err := runGet(t.Context(), cfg, "rel/app.bin", &stdout, &stderr, func(string) string { return "" })
	if err != nil {
		t.Fatalf("sluice get: %v\n%s", err, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sum, want := sha256.Sum256(got), sha256.Sum256(data); sum != want {
		t.Fatalf("saved SHA-256 %s, want %s", hex.EncodeToString(sum[:]), hex.EncodeToString(want[:]))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.creates != 1 || s.cancels != 0 || len(s.otherPaths) != 0 {
		t.Fatalf("%d tickets created, %d canceled, other requests %v; want the one ticket kept", s.creates, s.cancels, s.otherPaths)
	}
	if s.polls != 5 {
		t.Fatalf("%d polls of the ticket, want 5 (four failed, one ready)", s.polls)
	}
	if s.relinks < 1 {
		t.Fatal("the retried download did not ask for its link on a live edge")
	}
	log := stderr.String()
	for want, n := range map[string]int{
		"server unavailable (503 redis_unavailable: the admission ledger (Redis) is unavailable); retrying for up to 5m": 1,
		"download server unavailable (download link answered 503":                                                        1,
		"the server answers again after":                                                                                 2,
	} {
		if c := strings.Count(log, want); c != n {
			t.Errorf("stderr has %q %d times, want %d:\n%s", want, c, n, log)
		}
	}
}

// Past --wait-max, an outage ends the command with the server error (exit 7) and
// the last answer, instead of hanging on.
func TestGetGivesUpOnAnOutageAtWaitMax(t *testing.T) {
	s := newOutageServer(t, []byte("x"))
	for range 1000 {
		s.pollFails = append(s.pollFails, unavailable(503, "redis_unavailable"))
	}
	cfg := &getConfig{
		clientConfig: clientConfig{Server: s.url, Timeout: 5 * time.Second},
		Output:       filepath.Join(t.TempDir(), "x"), Connections: 1, Verify: "auto", Interval: time.Hour,
		WaitMax: 3 * time.Second, retryFirstWait: 5 * time.Millisecond,
	}
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := runGet(t.Context(), cfg, "rel/app.bin", &stdout, &stderr, func(string) string { return "" })
	if code := exitCode(err); code != exitServer || !strings.Contains(err.Error(), "503") {
		t.Fatalf("exit %d (%v), want %d with the 503", code, err, exitServer)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Fatalf("gave up after %s with --wait-max 3s", took)
	}
	if n := strings.Count(stderr.String(), "retrying for up to"); n != 1 {
		t.Fatalf("told of the outage %d times, want once:\n%s", n, stderr.String())
	}
}
