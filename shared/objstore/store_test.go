package objstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// implementations lists every Store, each made fresh and empty for one test. The
// contract below runs against all of them: where they behave the same, one test.
var implementations = []struct {
	name string
	open func(t *testing.T) Store
}{
	{"local", func(t *testing.T) Store { return newLocal(t) }},
	{"s3", func(t *testing.T) Store { s, _ := newS3(t); return s }},
}

func newLocal(t *testing.T) *Local {
	t.Helper()
	l, err := NewLocal(t.TempDir(), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// newS3 starts a MinIO of the test's own with one bucket and returns a store on it.
func newS3(t *testing.T) (*S3, *testenv.MinIO) {
	t.Helper()
	m := testenv.StartMinIO(t)
	b := m.Bucket(t, "sluice-test")
	s, err := NewS3(S3Config{
		Endpoint: b.Endpoint, AccessKey: b.AccessKey, SecretKey: b.SecretKey,
		Bucket: b.Bucket, Region: b.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestStoreContract(t *testing.T) {
	contract := []struct {
		name string
		run  func(t *testing.T, s Store)
	}{
		{"missing object", testMissingObject},
		{"put then stat", testPutThenStat},
		{"content type fallback", testContentTypeFallback},
		{"ranges", testRanges},
		{"range outside the object", testRangeOutside},
		{"empty object", testEmptyObject},
		{"stale etag after overwrite", testStaleETag},
		{"unknown size", testUnknownSize},
		{"failing body keeps the old version", testFailingBody},
		{"invalid keys", testInvalidKeys},
		{"canceled context", testCanceledContext},
		{"ping", func(t *testing.T, s Store) {
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			s := impl.open(t)
			for _, c := range contract {
				t.Run(c.name, func(t *testing.T) { c.run(t, s) })
			}
		})
	}
}

func testMissingObject(t *testing.T, s Store) {
	ctx := t.Context()
	if _, err := s.Stat(ctx, "missing/object.bin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.Open(ctx, "missing/object.bin", 0, -1, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing key: %v, want ErrNotFound at once", err)
	}
	if _, err := s.Open(ctx, "missing/object.bin", 3, 10, "some-etag"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ranged Open with an etag of a missing key: %v, want ErrNotFound", err)
	}
}

func testPutThenStat(t *testing.T, s Store) {
	ctx := t.Context()
	content := randomBytes(t, 1000)
	put, err := s.Put(ctx, "docs/2024/report.txt", bytes.NewReader(content), int64(len(content)), "")
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := s.Stat(ctx, "docs/2024/report.txt")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if got != put {
		t.Errorf("Stat = %+v, Put returned %+v", got, put)
	}
	if got.Key != "docs/2024/report.txt" || got.Size != 1000 {
		t.Errorf("Stat = %+v, want key docs/2024/report.txt and size 1000", got)
	}
	if got.ETag == "" || strings.Contains(got.ETag, `"`) {
		t.Errorf("ETag %q: want a non-empty value without quotes", got.ETag)
	}
	if !strings.HasPrefix(got.ContentType, "text/plain") {
		t.Errorf("ContentType %q, want text/plain from the extension", got.ContentType)
	}
	if age := time.Since(got.ModTime); age < -time.Minute || age > time.Minute {
		t.Errorf("ModTime %v is not about now", got.ModTime)
	}
	if again, _ := s.Stat(ctx, "docs/2024/report.txt"); again.ETag != got.ETag {
		t.Errorf("ETag changed from %s to %s with no write", got.ETag, again.ETag)
	}
	if got := readAll(t, s, "docs/2024/report.txt", 0, -1, put.ETag); !bytes.Equal(got, content) {
		t.Errorf("read back %d bytes that differ from the %d written", len(got), len(content))
	}
	if _, err := s.Stat(ctx, "docs/2024"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a folder: %v, want ErrNotFound", err)
	}
}

func testContentTypeFallback(t *testing.T, s Store) {
	info := put(t, s, "blobs/data.sluiceunknown", []byte("x"))
	if info.ContentType != "application/octet-stream" {
		t.Errorf("ContentType %q, want application/octet-stream", info.ContentType)
	}
}

func testRanges(t *testing.T, s Store) {
	content := randomBytes(t, 4096)
	info := put(t, s, "ranges/file.bin", content)
	tests := []struct {
		name           string
		offset, length int64
	}{
		{"whole", 0, -1},
		{"whole with explicit length", 0, 4096},
		{"first byte", 0, 1},
		{"middle", 1000, 100},
		{"from an offset to the end", 4000, -1},
		{"last byte", 4095, 1},
		{"last byte to the end", 4095, -1},
		{"nothing, mid-object", 10, 0},
		{"nothing, at the end", 4096, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end := int64(len(content))
			if tt.length >= 0 {
				end = tt.offset + tt.length
			}
			want := content[tt.offset:end]
			for _, etag := range []string{"", info.ETag} {
				got := readAll(t, s, "ranges/file.bin", tt.offset, tt.length, etag)
				if !bytes.Equal(got, want) {
					t.Fatalf("Open(%d, %d, etag %q) read %d bytes, want bytes [%d:%d] (%d)",
						tt.offset, tt.length, etag, len(got), tt.offset, end, len(want))
				}
			}
		})
	}
}

func testRangeOutside(t *testing.T, s Store) {
	put(t, s, "ranges/short.bin", randomBytes(t, 100))
	for _, r := range [][2]int64{{100, -1}, {101, -1}, {101, 0}, {90, 11}, {100, 1}, {500, 10}, {-1, 10}} {
		rc, err := s.Open(t.Context(), "ranges/short.bin", r[0], r[1], "")
		if err == nil {
			rc.Close()
			t.Errorf("Open(%d, %d) of a 100-byte object succeeded, want an error", r[0], r[1])
			continue
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrChanged) {
			t.Errorf("Open(%d, %d) of a 100-byte object: %v, want a range error, not a sentinel", r[0], r[1], err)
		}
	}
}

func testEmptyObject(t *testing.T, s Store) {
	info := put(t, s, "empty.txt", nil)
	if info.Size != 0 {
		t.Fatalf("size %d, want 0", info.Size)
	}
	if got := readAll(t, s, "empty.txt", 0, -1, info.ETag); len(got) != 0 {
		t.Errorf("read %d bytes from an empty object", len(got))
	}
	if rc, err := s.Open(t.Context(), "empty.txt", 0, 1, ""); err == nil {
		rc.Close()
		t.Errorf("Open(0, 1) of an empty object succeeded, want a range error")
	}
}

func testStaleETag(t *testing.T, s Store) {
	ctx := t.Context()
	v1 := put(t, s, "stale/app.tar.gz", bytes.Repeat([]byte("1"), 256))
	// Same size, different bytes: only the version can tell them apart.
	v2 := put(t, s, "stale/app.tar.gz", bytes.Repeat([]byte("2"), 256))
	if v1.ETag == v2.ETag {
		t.Fatalf("overwrite kept ETag %s", v1.ETag)
	}
	for _, r := range [][2]int64{{0, -1}, {10, 5}, {100, -1}, {0, 0}} {
		rc, err := s.Open(ctx, "stale/app.tar.gz", r[0], r[1], v1.ETag)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, ErrChanged) {
			t.Errorf("Open(%d, %d) with the overwritten ETag: %v, want ErrChanged", r[0], r[1], err)
		}
	}
	if got := readAll(t, s, "stale/app.tar.gz", 10, 5, v2.ETag); string(got) != "22222" {
		t.Errorf("Open with the current ETag read %q, want 22222", got)
	}
}

func testUnknownSize(t *testing.T, s Store) {
	content := randomBytes(t, 3<<20)
	// hideType keeps Put from discovering the size or seeking.
	info, err := s.Put(t.Context(), "streams/unknown.bin", hideType{bytes.NewReader(content)}, -1, "")
	if err != nil {
		t.Fatalf("Put of unknown size: %v", err)
	}
	if info.Size != int64(len(content)) {
		t.Errorf("size %d, want %d", info.Size, len(content))
	}
	if got := readAll(t, s, "streams/unknown.bin", 0, -1, info.ETag); !bytes.Equal(got, content) {
		t.Errorf("read back %d bytes that differ from the %d written", len(got), len(content))
	}
}

func testFailingBody(t *testing.T, s Store) {
	ctx := t.Context()
	old := put(t, s, "uploads/keep.bin", []byte("old version"))
	broken := func() io.Reader {
		return io.MultiReader(bytes.NewReader(randomBytes(t, 100)), errReader{errors.New("client went away")})
	}
	bodies := []struct {
		name string
		r    io.Reader
		size int64
	}{
		{"read error, known size", broken(), 1000},
		{"read error, unknown size", io.MultiReader(bytes.NewReader([]byte("abc")), errReader{errors.New("reset")}), -1},
		{"body shorter than its size", hideType{bytes.NewReader([]byte("only ten b"))}, 1000},
	}
	for _, b := range bodies {
		_, err := s.Put(ctx, "uploads/keep.bin", b.r, b.size, "")
		if err == nil {
			t.Errorf("%s: Put succeeded", b.name)
			continue
		}
		if errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v; a broken body says nothing about the store, want no ErrUnavailable", b.name, err)
		}
	}
	if got := readAll(t, s, "uploads/keep.bin", 0, -1, old.ETag); string(got) != "old version" {
		t.Errorf("after failed overwrites read %q, want the old version intact", got)
	}
	_, err := s.Put(ctx, "uploads/new.bin", broken(), 1000, "")
	if err == nil {
		t.Fatal("Put of a broken body succeeded")
	}
	if _, err := s.Stat(ctx, "uploads/new.bin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a failed first Put, Stat: %v, want ErrNotFound (no partial object)", err)
	}
}

func testInvalidKeys(t *testing.T, s Store) {
	ctx := t.Context()
	for _, key := range []string{"", "../escape", "a//b", "/abs", "dir/", "back\\slash"} {
		_, statErr := s.Stat(ctx, key)
		_, openErr := s.Open(ctx, key, 0, -1, "")
		_, putErr := s.Put(ctx, key, strings.NewReader("x"), 1, "")
		for op, err := range map[string]error{"Stat": statErr, "Open": openErr, "Put": putErr} {
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%s(%q): %v, want ErrInvalidKey", op, key, err)
			}
		}
	}
}

func testCanceledContext(t *testing.T, s Store) {
	put(t, s, "cancel/me.txt", []byte("hello"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, statErr := s.Stat(ctx, "cancel/me.txt")
	_, openErr := s.Open(ctx, "cancel/me.txt", 0, -1, "")
	_, putErr := s.Put(ctx, "cancel/me.txt", strings.NewReader("bye"), 3, "")
	for op, err := range map[string]error{"Stat": statErr, "Open": openErr, "Put": putErr, "Ping": s.Ping(ctx)} {
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled and not ErrUnavailable", op, err)
		}
	}
}

// put stores content under key with a known size and fails the test otherwise.
func put(t *testing.T, s Store, key string, content []byte) Info {
	t.Helper()
	info, err := s.Put(t.Context(), key, bytes.NewReader(content), int64(len(content)), "")
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if info.Size != int64(len(content)) {
		t.Fatalf("Put(%q) stored %d bytes, want %d", key, info.Size, len(content))
	}
	return info
}

// readAll opens a section and reads it whole, failing the test on any error.
func readAll(t *testing.T, s Store, key string, offset, length int64, etag string) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key, offset, length, etag)
	if err != nil {
		t.Fatalf("Open(%q, %d, %d, %q): %v", key, offset, length, etag, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// hideType hides every method but Read (Seek, Len, WriteTo, ReadAt).
type hideType struct{ r io.Reader }

func (h hideType) Read(p []byte) (int, error) { return h.r.Read(p) }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
