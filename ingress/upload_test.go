package ingress_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	wire "github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// uploadServer is an ingress whose uploads go to a real local object directory,
// with the API keys in a real JetStream KV bucket and a catalog the test fills.
type uploadServer struct {
	url, dir          string
	publisher, client string
	catalog           *fixedCatalog
	store             *countingStore
	maxSize           int64
}

func newUploadServer(t *testing.T, maxSize int64) *uploadServer {
	t.Helper()
	dir := t.TempDir()
	discard := slog.New(slog.DiscardHandler)
	local, err := objstore.NewLocal(dir, objstore.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := queue.EnsureRecords(t.Context(), testenv.StartNATS(t).JetStream(t), queue.RecordConfig{Bucket: queue.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	keys := apikeys.New(kv, apikeys.Generate())
	_, pub, err := keys.Create(t.Context(), apikeys.ScopePublisher, "ci", "uploads")
	if err != nil {
		t.Fatal(err)
	}
	_, cl, err := keys.Create(t.Context(), apikeys.ScopeClient, "acme", "downloads")
	if err != nil {
		t.Fatal(err)
	}
	s := &uploadServer{dir: dir, publisher: pub, client: cl, catalog: &fixedCatalog{}, store: &countingStore{Local: local}, maxSize: maxSize}
	srv := httptest.NewServer(ingress.New(ingress.Config{
		Objects:  local,
		Keys:     keys,
		Logger:   discard,
		Releases: ingress.ReleasesConfig{Catalog: s.catalog},
		Uploads:  ingress.UploadsConfig{Store: s.store, MaxSize: maxSize},
	}).Handler())
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

type uploadAnswer struct {
	status int
	wire.Upload
	Code  string `json:"code"`
	Error string `json:"error"`
	Hint  string `json:"hint"`
}

func (s *uploadServer) put(t *testing.T, key, apiKey string, body io.Reader, size int64, hdr ...string) uploadAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, s.url+"/api/v1/uploads/"+key, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := uploadAnswer{status: resp.StatusCode}
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("PUT %s: %d %q: %v", key, resp.StatusCode, raw, err)
	}
	return a
}

func digestHeader(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

func hexSHA(b []byte) string { sum := sha256.Sum256(b); return hex.EncodeToString(sum[:]) }

// The body goes to the store under the key, with the digest the server computed;
// a stated digest that matches changes nothing.
func TestUploadStoresTheBodyWithTheServersDigest(t *testing.T) {
	s := newUploadServer(t, 0)
	body := bytes.Repeat([]byte("sluice "), 300_000) // 2.1 MB: many reads
	a := s.put(t, "releases/1.2/app.tar.gz", s.publisher, bytes.NewReader(body), int64(len(body)),
		"Content-Digest", "md5=:AAAA:, "+digestHeader(body), "Content-Type", "application/gzip")
	if a.status != http.StatusCreated || !a.Stored || a.SHA256 != hexSHA(body) || a.Size != int64(len(body)) || a.ETag == "" {
		t.Fatalf("upload: %+v", a)
	}
	got, err := os.ReadFile(filepath.Join(s.dir, "releases", "1.2", "app.tar.gz"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("stored file: %d bytes, %v", len(got), err)
	}
	// Without a stated digest the server's is the answer; an empty file is a file.
	if a := s.put(t, "releases/1.2/EMPTY", s.publisher, http.NoBody, 0); a.status != http.StatusCreated || a.SHA256 != hexSHA(nil) {
		t.Fatalf("empty upload: %+v", a)
	}
}

// A body that is not what its Content-Digest says is refused and leaves nothing:
// neither the object nor a temporary file.
func TestUploadWithAWrongDigestStoresNothing(t *testing.T) {
	s := newUploadServer(t, 0)
	body := bytes.Repeat([]byte{7}, 1<<20)
	a := s.put(t, "rel/app.bin", s.publisher, bytes.NewReader(body), int64(len(body)), "Content-Digest", digestHeader([]byte("other")))
	if a.status != http.StatusBadRequest || a.Code != "digest_mismatch" || !strings.Contains(a.Hint, "nothing was stored") {
		t.Fatalf("wrong digest: %+v", a)
	}
	if a := s.put(t, "rel/app.bin", s.publisher, strings.NewReader("x"), 1, "Content-Digest", "sha-256=:nope:"); a.status != http.StatusBadRequest || a.Code != "invalid_digest" {
		t.Fatalf("malformed digest: %+v", a)
	}
	assertEmptyDir(t, s.dir)
}

// Over the size limit: 413 naming the limit and the setting, before the body is
// read (the store is never called), and nothing stored.
func TestUploadOverTheLimitIs413(t *testing.T) {
	s := newUploadServer(t, 1000)
	a := s.put(t, "rel/big.bin", s.publisher, bytes.NewReader(make([]byte, 1001)), 1001)
	if a.status != http.StatusRequestEntityTooLarge || a.Code != "upload_too_large" ||
		!strings.Contains(a.Error, "1000 bytes") || !strings.Contains(a.Hint, "SLUICE_MAX_UPLOAD_SIZE") {
		t.Fatalf("over the limit: %+v", a)
	}
	if a := s.put(t, "rel/ok.bin", s.publisher, bytes.NewReader(make([]byte, 1000)), 1000); a.status != http.StatusCreated {
		t.Fatalf("at the limit: %+v", a)
	}
	if n := s.store.puts.Load(); n != 1 {
		t.Fatalf("the store saw %d puts, want only the one within the limit", n)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "rel", "big.bin")); !os.IsNotExist(err) {
		t.Fatalf("the refused upload is in the store: %v", err)
	}
}

// Only publisher keys upload; a length is required; keys are checked like
// everywhere else.
func TestUploadRefusals(t *testing.T) {
	s := newUploadServer(t, 0)
	for _, tc := range []struct {
		name, key, apiKey string
		size              int64
		status            int
		code              string
	}{
		{"client key", "rel/a.bin", s.client, 1, http.StatusForbidden, "wrong_scope"},
		{"no key", "rel/a.bin", "", 1, http.StatusUnauthorized, "key_required"},
		{"chunked", "rel/a.bin", s.publisher, -1, http.StatusLengthRequired, "length_required"},
		{"bad key", "rel/../a.bin", s.publisher, 1, http.StatusBadRequest, "invalid_object_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader("x")
			if tc.size < 0 {
				body = io.MultiReader(strings.NewReader("x")) // unknown length: chunked
			}
			a := s.put(t, tc.key, tc.apiKey, body, tc.size)
			if a.status != tc.status || a.Code != tc.code {
				t.Fatalf("%s: %+v, want %d %s", tc.name, a, tc.status, tc.code)
			}
		})
	}
	assertEmptyDir(t, s.dir)
}

// The same upload again, of a version the catalog verified with the same digest,
// is answered before the body is read: with Expect: 100-continue the client never
// sends it. Another digest is stored again.
func TestUploadOfAVerifiedVersionIsNotSentAgain(t *testing.T) {
	s := newUploadServer(t, 0)
	body := []byte("release 1.2\n")
	first := s.put(t, "rel/NOTES", s.publisher, bytes.NewReader(body), int64(len(body)), "Content-Digest", digestHeader(body))
	if first.status != http.StatusCreated {
		t.Fatalf("first upload: %+v", first)
	}
	s.catalog.set(catalog.Entry{Object: "rel/NOTES", Size: first.Size, SHA256: first.SHA256, ETag: first.ETag, State: catalog.StateVerified})
	read := &countingReader{r: bytes.NewReader(body)}
	again := s.put(t, "rel/NOTES", s.publisher, read, int64(len(body)), "Content-Digest", digestHeader(body), "Expect", "100-continue")
	if again.status != http.StatusOK || again.Stored || again.SHA256 != first.SHA256 || again.ETag != first.ETag {
		t.Fatalf("upload of the verified version: %+v", again)
	}
	if n := s.store.puts.Load(); n != 1 {
		t.Fatalf("the store saw %d puts, want 1", n)
	}
	if n := read.n.Load(); n != 0 {
		t.Fatalf("the client sent %d bytes of a body the server did not want", n)
	}
	changed := []byte("release 1.2, fixed\n")
	if a := s.put(t, "rel/NOTES", s.publisher, bytes.NewReader(changed), int64(len(changed)), "Content-Digest", digestHeader(changed)); a.status != http.StatusCreated || !a.Stored || a.SHA256 != hexSHA(changed) {
		t.Fatalf("upload of new bytes: %+v", a)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left in the store: %s", path)
		}
		return nil
	})
}

// countingStore is a local store that counts its Puts.
type countingStore struct {
	*objstore.Local
	puts atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64, ct string) (objstore.Info, error) {
	c.puts.Add(1)
	return c.Local.Put(ctx, key, r, size, ct)
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// fixedCatalog answers lookups with the entries a test set.
type fixedCatalog struct {
	emptyCatalog
	entries map[string]catalog.Entry
}

func (f *fixedCatalog) set(e catalog.Entry) {
	if f.entries == nil {
		f.entries = map[string]catalog.Entry{}
	}
	f.entries[e.Object] = e
}

func (f *fixedCatalog) Lookup(_ context.Context, key string) (catalog.Entry, error) {
	if e, ok := f.entries[key]; ok {
		return e, nil
	}
	return catalog.Entry{}, catalog.ErrNotFound
}
