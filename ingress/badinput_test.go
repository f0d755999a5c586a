package ingress_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// badInputServer is an ingress over a real local object directory that holds a link
// out of it, a FIFO and a folder, with the API keys in a real JetStream KV bucket. The
// requests tested here are all refused before the ledger or the ticket stream is
// needed, so those are left out.
type badInputServer struct {
	url      string
	operator string // the bootstrap operator key
	queue    *recordingQueue
}

func newBadInputServer(t *testing.T) *badInputServer {
	t.Helper()
	dir, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret")
	for _, err := range []error{
		os.WriteFile(secret, []byte("outside"), 0o644),
		os.Symlink(secret, filepath.Join(dir, "escape")),
		os.Symlink(outside, filepath.Join(dir, "escape-dir")),
		syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644),
		os.Mkdir(filepath.Join(dir, "folder"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	discard := slog.New(slog.DiscardHandler)
	local, err := objstore.NewLocal(dir, objstore.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := queue.EnsureRecords(t.Context(), testenv.StartNATS(t).JetStream(t), queue.RecordConfig{Bucket: queue.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	operator := apikeys.Generate()
	q := &recordingQueue{}
	srv := httptest.NewServer(ingress.New(ingress.Config{
		Objects:  local,
		Keys:     apikeys.New(kv, operator),
		Logger:   discard,
		Releases: ingress.ReleasesConfig{Queue: q, Catalog: emptyCatalog{}},
	}).Handler())
	t.Cleanup(srv.Close)
	return &badInputServer{url: srv.URL, operator: operator, queue: q}
}

type apiAnswer struct {
	status int
	Code   string         `json:"code"`
	Error  string         `json:"error"`
	Hint   string         `json:"hint"`
	Lines  []rejectedLine `json:"rejected"`
}

type rejectedLine struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

func (s *badInputServer) do(t *testing.T, method, path, contentType, body string) apiAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+s.operator)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := apiAnswer{status: resp.StatusCode}
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, raw, err)
	}
	return a
}

// Every entry point that takes an object key answers a key that is too long with 400
// stating the limit, and a key naming a link out of the object directory, a FIFO or a
// folder with 404, exactly as a missing object: never 500.
func TestBadObjectKeysAreClientErrors(t *testing.T) {
	s := newBadInputServer(t)
	longSegment := "rel/" + strings.Repeat("s", objstore.MaxSegmentLen+1) + "/app.tar.gz"
	longKey := strings.Repeat("k/", objstore.MaxKeyLen/2) + "k"
	tooLong := map[string]string{longSegment: "longer than 255 bytes", longKey: "longer than 1024 bytes"}
	refused := []string{"escape", "escape-dir/secret", "fifo", "folder", "missing"}

	post := func(key string) apiAnswer {
		body, _ := json.Marshal(map[string]string{"object": key})
		return s.do(t, http.MethodPost, "/api/v1/downloads", "application/json", string(body))
	}
	get := func(prefix string) func(string) apiAnswer {
		return func(key string) apiAnswer { return s.do(t, http.MethodGet, prefix+key, "", "") }
	}
	for name, ask := range map[string]func(string) apiAnswer{
		"POST /api/v1/downloads":    post,
		"GET /api/v1/files/{key}":   get("/api/v1/files/"),
		"GET /api/v1/objects/{key}": get("/api/v1/objects/"),
	} {
		for key, limit := range tooLong {
			if a := ask(key); a.status != http.StatusBadRequest || a.Code != "invalid_object_key" || !strings.Contains(a.Error, limit) {
				t.Errorf("%s with a key %s: %d %s %q, want 400 invalid_object_key stating the limit", name, limit, a.status, a.Code, a.Error)
			}
		}
		for _, key := range refused {
			a := ask(key)
			want := "object_not_found"
			if strings.HasPrefix(name, "GET /api/v1/objects") {
				want = "object_not_catalogued" // the catalog's answer; the store only shapes the hint
			}
			if a.status != http.StatusNotFound || a.Code != want {
				t.Errorf("%s %s: %d %s %q, want 404 %s", name, key, a.status, a.Code, a.Error, want)
			}
			if strings.Contains(a.Error+a.Hint, "regular") || strings.Contains(a.Error+a.Hint, "link") {
				t.Errorf("%s %s: the answer %q tells what is in the directory", name, key, a.Error+" "+a.Hint)
			}
		}
	}

	// A release batch names the limit on the line that breaks it, and keeps the rest.
	batch := strings.Join([]string{
		`{"object":"` + longSegment + `","sha256":"` + strings.Repeat("a", 64) + `","size":1}`,
		`{"object":"` + longKey + `","sha256":"` + strings.Repeat("a", 64) + `","size":1}`,
		`{"object":"rel/ok.tar.gz","sha256":"` + strings.Repeat("a", 64) + `","size":1}`,
	}, "\n")
	a := s.do(t, http.MethodPost, "/api/v1/releases", "application/x-ndjson", batch)
	if a.status != http.StatusAccepted || len(a.Lines) != 2 ||
		!strings.Contains(a.Lines[0].Error, "longer than 255 bytes") || !strings.Contains(a.Lines[1].Error, "longer than 1024 bytes") {
		t.Errorf("release batch: %d %+v, want 202 with lines 1 and 2 rejected, stating the limits", a.status, a.Lines)
	}
	if got := s.queue.objects(); len(got) != 1 || got[0] != "rel/ok.tar.gz" {
		t.Errorf("events stored: %v, want only rel/ok.tar.gz", got)
	}
	a = s.do(t, http.MethodPost, "/api/v1/releases", "application/json",
		`{"object":"`+longSegment+`","sha256":"`+strings.Repeat("a", 64)+`","size":1}`)
	if a.status != http.StatusBadRequest || !strings.Contains(a.Error, "longer than 255 bytes") {
		t.Errorf("one release event with a long segment: %d %q, want 400 stating the limit", a.status, a.Error)
	}
}

// POST /api/v1/admin/keys refuses a name it cannot keep with 400 stating the limit.
func TestCreateKeyRefusesBadNames(t *testing.T) {
	s := newBadInputServer(t)
	create := func(name string) apiAnswer {
		body, _ := json.Marshal(map[string]string{"scope": "client", "tenant": "acme", "name": name})
		return s.do(t, http.MethodPost, "/api/v1/admin/keys", "application/json", string(body))
	}
	for name, mentions := range map[string]string{
		strings.Repeat("n", apikeys.MaxNameLen+1):  "201 characters long, longer than 200 characters",
		strings.Repeat("é", apikeys.MaxNameLen+50): "250 characters long, longer than 200 characters",
		strings.Repeat("n", 64<<10-100):            "longer than 200 characters",
		"line\nbreak":                              "control character U+000A",
	} {
		if a := create(name); a.status != http.StatusBadRequest || a.Code != "invalid_key_request" || !strings.Contains(a.Error, mentions) {
			t.Errorf("name of %d bytes: %d %s %q, want 400 invalid_key_request saying %q", len(name), a.status, a.Code, a.Error, mentions)
		}
	}
	if a := create(strings.Repeat("é", apikeys.MaxNameLen)); a.status != http.StatusCreated {
		t.Errorf("a name of exactly %d characters: %d %s %q, want 201", apikeys.MaxNameLen, a.status, a.Code, a.Error)
	}
}

// recordingQueue stores every event it is given.
type recordingQueue struct {
	mu     sync.Mutex
	events []queue.ReleaseEvent
}

func (q *recordingQueue) PublishBatch(_ context.Context, events []queue.ReleaseEvent) (queue.BatchResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = append(q.events, events...)
	res := queue.BatchResult{Accepted: len(events), Stored: make([]bool, len(events))}
	for i := range res.Stored {
		res.Stored[i] = true
	}
	return res, nil
}

func (q *recordingQueue) Backlog(context.Context) (uint64, error) { return 0, nil }

func (q *recordingQueue) all() []queue.ReleaseEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queue.ReleaseEvent(nil), q.events...)
}

func (q *recordingQueue) reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = nil
}

func (q *recordingQueue) objects() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var keys []string
	for _, e := range q.events {
		keys = append(keys, e.Object)
	}
	return keys
}

// emptyCatalog lists nothing: every object is unknown to it, no alias resolves.
type emptyCatalog struct{}

func (emptyCatalog) Lookup(context.Context, string) (catalog.Entry, error) {
	return catalog.Entry{}, catalog.ErrNotFound
}
func (emptyCatalog) Recorded(context.Context, string) (catalog.Entry, error) {
	return catalog.Entry{}, catalog.ErrNotFound
}
func (emptyCatalog) Resolve(_ context.Context, name string) (string, bool, error) {
	return name, false, nil
}
func (emptyCatalog) MarkPending(context.Context, []catalog.Pending) error { return nil }
func (emptyCatalog) Stats(context.Context) (catalog.Stats, error)         { return catalog.Stats{}, nil }
