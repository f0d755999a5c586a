// Package e2e runs the real sluice binary, role by role as separate processes, against
// real redis-server, NATS JetStream and MinIO, and drives it as clients would.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

var sluiceBin string

func TestMain(m *testing.M) {
	var remove func()
	sluiceBin, remove = testenv.BuildSluice("e2e")
	code := m.Run()
	remove()
	os.Exit(code)
}

// stack is one sluice deployment for a test: its services and its role processes.
type stack struct {
	t       *testing.T
	redis   *testenv.Redis
	nats    *testenv.NATS
	minio   *testenv.MinIO // nil: objects on local disk under dataDir/objects
	bucket  string
	dataDir string
	env     []string

	ingressURL string
	edgeURL    string
	// edgeMetricsURL is the edge's operations port (/metrics, /debug/edge), which
	// the public edgeURL never serves.
	edgeMetricsURL string
	// owners holds the client key of each ticket made with one: a ticket is its
	// tenant's, so reading or following it needs that key.
	owners          sync.Map // ticket id -> key
	edgePort        int
	edgeMetricsPort int
	roles           []*testenv.Process
}

type stackOptions struct {
	S3          bool
	GlobalLimit int
	Env         []string
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, redis: testenv.StartRedis(t), nats: testenv.StartNATS(t), dataDir: t.TempDir()}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	limit := o.GlobalLimit
	if limit == 0 {
		limit = 10
	}
	s.edgePort = testenv.FreePort(t)
	s.edgeURL = "http://127.0.0.1:" + strconv.Itoa(s.edgePort)
	s.edgeMetricsPort = testenv.FreePort(t)
	s.edgeMetricsURL = "http://127.0.0.1:" + strconv.Itoa(s.edgeMetricsPort)
	s.env = []string{
		"SLUICE_NATS_URL=" + s.nats.URL,
		"SLUICE_REDIS_URL=" + s.redis.URL,
		"SLUICE_SIGNING_KEYS=k1:" + base64.StdEncoding.EncodeToString(key),
		"SLUICE_DATA_DIR=" + s.dataDir,
		"SLUICE_GLOBAL_LIMIT=" + strconv.Itoa(limit),
		"SLUICE_ACK_WAIT=3s", "SLUICE_TICKET_ACK_WAIT=3s",
		"SLUICE_PUBLIC_EDGE_URL=" + s.edgeURL,
		"SLUICE_LOG_LEVEL=debug",
		// Several workers on one machine: each one's /metrics on a free port (the
		// fleet registry, GET /api/v1/admin/workers, tells which).
		"SLUICE_METRICS_ADDR=127.0.0.1:0",
		// Each edge's operations port likewise; the stack's own edge (edgePort) has
		// edgeMetricsPort.
		"SLUICE_EDGE_METRICS_ADDR=127.0.0.1:0",
		// Tests take tickets far faster than a person: the per-client ticket rate is
		// off unless a test sets it (admission_ratelimit_test.go).
		"SLUICE_TICKET_RATE=0",
	}
	if o.S3 {
		s.minio = testenv.StartMinIO(t)
		s.bucket = "downloads"
		s.minio.Bucket(t, s.bucket)
		s.env = append(s.env,
			"SLUICE_S3_ENDPOINT="+s.minio.Endpoint,
			"SLUICE_S3_BUCKET="+s.bucket,
			"SLUICE_S3_ACCESS_KEY="+s.minio.AccessKey,
			"SLUICE_S3_SECRET_KEY="+s.minio.SecretKey,
		)
	}
	s.env = append(s.env, o.Env...)
	return s
}

// start runs one role ("ingress", "worker", "edge") and waits until it is ready.
func (s *stack) start(role string, env ...string) *testenv.Process {
	s.t.Helper()
	env = append(append([]string{}, s.env...), env...)
	var ready string
	switch role {
	case "ingress":
		port := testenv.FreePort(s.t)
		s.ingressURL = "http://127.0.0.1:" + strconv.Itoa(port)
		env = append(env, "SLUICE_INGRESS_ADDR=127.0.0.1:"+strconv.Itoa(port))
		ready = s.ingressURL + "/readyz"
	case "edge":
		env = append(env, "SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(s.edgePort),
			"SLUICE_EDGE_METRICS_ADDR=127.0.0.1:"+strconv.Itoa(s.edgeMetricsPort))
		ready = s.edgeURL + "/readyz"
	}
	p := testenv.Start(s.t, s.t.TempDir(), sluiceBin, env, role)
	s.roles = append(s.roles, p)
	if ready != "" {
		testenv.WaitHTTP(s.t, ready, 20*time.Second, p.Log)
	} else {
		// A worker's metrics port (on a port of its choosing) serves once it has
		// rebuilt the ledger: tickets taken from then on are admitted without the
		// pause a rebuild makes for live streams. Then its first fetch.
		eventually(s.t, 30*time.Second, "the worker listens", func() bool {
			b, _ := os.ReadFile(p.Log)
			return bytes.Contains(b, []byte(`"server":"metrics"`))
		})
		time.Sleep(300 * time.Millisecond)
	}
	return p
}

// startAll runs one ingress, the given number of workers and one edge.
func (s *stack) startAll(workers int) {
	s.t.Helper()
	s.start("edge")
	for range workers {
		s.start("worker")
	}
	s.start("ingress")
}

// dumpLogs prints every role's log when the test failed.
func (s *stack) dumpLogsOnFailure() {
	s.t.Cleanup(func() {
		if !s.t.Failed() {
			return
		}
		for _, p := range s.roles {
			out, _ := os.ReadFile(p.Log)
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			s.t.Logf("--- %s ---\n%s", p.Log, out)
		}
	})
}

// putObject stores an object in the stack's object store.
func (s *stack) putObject(key string, data []byte) {
	s.t.Helper()
	if s.minio != nil {
		_, err := s.minio.Client(s.t).PutObject(s.t.Context(), s.bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{ContentType: "application/octet-stream"})
		if err != nil {
			s.t.Fatalf("put %s into MinIO: %v", key, err)
		}
		return
	}
	path := filepath.Join(s.dataDir, "objects", filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// noRedirect waits longer than the ingress's --files-wait (10 s), which a /files or
// ticket download request may take before its answer.
var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// request creates a ticket and checks the 202 contract.
func (s *stack) request(object string, header ...string) api.Ticket {
	s.t.Helper()
	body, _ := json.Marshal(map[string]string{"object": object})
	req, _ := http.NewRequest(http.MethodPost, s.ingressURL+"/api/v1/downloads", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		s.t.Fatalf("POST /api/v1/downloads: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		s.t.Fatalf("POST /api/v1/downloads %q: %d %s", object, resp.StatusCode, raw)
	}
	var tk api.Ticket
	if err := json.Unmarshal(raw, &tk); err != nil {
		s.t.Fatalf("ticket JSON: %v: %s", err, raw)
	}
	if loc := resp.Header.Get("Location"); loc != "/api/v1/tickets/"+tk.ID {
		s.t.Fatalf("Location %q for ticket %s", loc, tk.ID)
	}
	if resp.Header.Get("Retry-After") == "" {
		s.t.Fatal("202 without Retry-After")
	}
	return tk
}

// asOwner sends req with the key of its ticket's owner, if a key made it.
func (s *stack) asOwner(req *http.Request, id string) (*http.Response, error) {
	if k, ok := s.owners.Load(id); ok {
		req.Header.Set("Authorization", "Bearer "+k.(string))
	}
	return noRedirect.Do(req)
}

func (s *stack) ticket(id string) api.Ticket {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.ingressURL+"/api/v1/tickets/"+id, nil)
	resp, err := s.asOwner(req, id)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tk api.Ticket
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tk) != nil {
		s.t.Fatalf("GET ticket %s: %d", id, resp.StatusCode)
	}
	return tk
}

// follow polls /download like a plain client until it gets its 303, honouring 202s.
func (s *stack) follow(id string, within time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, s.ingressURL+"/api/v1/tickets/"+id+"/download", nil)
		req.Header.Set("Accept", "application/json") // the ticket at once while queued, not the wait
		resp, err := s.asOwner(req, id)
		if err != nil {
			s.t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusSeeOther:
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "/api/v1/") {
				return loc
			}
			// Sent to wait again after SLUICE_FILES_WAIT: ask again.
		case http.StatusAccepted:
			if resp.Header.Get("Retry-After") == "" {
				s.t.Fatal("202 from /download without Retry-After")
			}
			time.Sleep(50 * time.Millisecond)
		default:
			s.t.Fatalf("GET /download of %s: %d", id, resp.StatusCode)
		}
	}
	s.t.Fatalf("ticket %s not ready within %s: %+v", id, within, s.ticket(id))
	return ""
}

// waitStatus polls a ticket until it has the status.
func (s *stack) waitStatus(id, status string, within time.Duration) api.Ticket {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		tk := s.ticket(id)
		if tk.Status == status {
			return tk
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("ticket %s is %q after %s, want %q (%s)", id, tk.Status, within, status, tk.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sha(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// download GETs a link and returns the body's SHA-256 and length.
func download(t *testing.T, url string) (string, int64, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, resp
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
