package edgecache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// countingStore counts the reads that reach the origin, and can be made unavailable.
type countingStore struct {
	objstore.Store
	opens atomic.Int64
	stats atomic.Int64
	down  atomic.Bool
	gate  chan struct{} // non-nil: reads from the start wait until it is closed
}

func (s *countingStore) Stat(ctx context.Context, key string) (objstore.Info, error) {
	if s.down.Load() {
		return objstore.Info{}, fmt.Errorf("test: %w", objstore.ErrUnavailable)
	}
	s.stats.Add(1)
	return s.Store.Stat(ctx, key)
}

func (s *countingStore) Open(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("test: %w", objstore.ErrUnavailable)
	}
	s.opens.Add(1)
	if s.gate != nil && off == 0 {
		<-s.gate
	}
	return s.Store.Open(ctx, key, off, n, etag)
}

// digestMap is a catalog of SHA-256 by key.
type digestMap map[string]string

func (d digestMap) SHA256(_ context.Context, key, _ string) (string, error) { return d[key], nil }

type fixture struct {
	origin *countingStore
	cache  *Cache
	dir    string
	info   map[string]objstore.Info
	data   map[string][]byte
	digest digestMap
}

func newFixture(t *testing.T, size int64, objects map[string]int) *fixture {
	t.Helper()
	local, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{origin: &countingStore{Store: local}, dir: t.TempDir(),
		info: map[string]objstore.Info{}, data: map[string][]byte{}, digest: digestMap{}}
	for key, n := range objects {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		info, err := local.Put(t.Context(), key, bytes.NewReader(b), int64(n), "")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		fx.info[key], fx.data[key], fx.digest[key] = info, b, hex.EncodeToString(sum[:])
	}
	fx.open(t, size)
	return fx
}

func (fx *fixture) open(t *testing.T, size int64) {
	t.Helper()
	c, err := New(Config{Dir: fx.dir, Size: size, Origin: fx.origin, Digests: fx.digest, RequireDigest: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fx.cache = c
}

// read reads a section through the cache and checks it is the object's.
func (fx *fixture) read(t *testing.T, key string, off, n int64) io.ReadCloser {
	t.Helper()
	rc, err := fx.cache.Open(t.Context(), key, off, n, fx.info[key].ETag)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.data[key][off:off+n]) {
		t.Fatalf("%s at %d+%d: wrong bytes", key, off, n)
	}
	return rc
}

func (fx *fixture) readAll(t *testing.T, key string) io.ReadCloser {
	return fx.read(t, key, 0, int64(len(fx.data[key])))
}

// waitFor polls cond: fills run in the background.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (fx *fixture) waitFills(t *testing.T, n int64) {
	waitFor(t, fmt.Sprintf("%d fills", n), func() bool { return fx.cache.Stats().Fills >= n })
}

func TestFillOnceThenServeFromDisk(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 5<<20 + 17})
	fx.readAll(t, "a.bin")
	fx.waitFills(t, 1)
	rc := fx.readAll(t, "a.bin")
	if _, ok := rc.(interface{ Section() *io.LimitedReader }); !ok {
		t.Errorf("a hit is a %T, not a file section the edge can sendfile", rc)
	}
	fx.read(t, "a.bin", 1<<20, 4096)
	if n := fx.origin.opens.Load(); n != 1 {
		t.Errorf("origin read %d times, want once (the fill)", n)
	}
	s := fx.cache.Stats()
	if s.Hits != 2 || s.BytesFromCache != int64(len(fx.data["a.bin"]))+4096 || s.BytesFromOrigin != int64(len(fx.data["a.bin"])) {
		t.Errorf("stats %+v", s)
	}
}

func TestConcurrentFirstReadsShareOneFill(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 8 << 20})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { fx.readAll(t, "a.bin") })
	}
	wg.Wait()
	if n := fx.origin.opens.Load(); n != 1 {
		t.Errorf("8 concurrent first reads made %d origin reads, want 1", n)
	}
	// A range the fill had not reached when it was asked for comes from the origin.
	fx2 := newFixture(t, 64<<20, map[string]int{"b.bin": 8 << 20})
	fx2.origin.gate = make(chan struct{}) // the fill has not read a byte yet
	fx2.read(t, "b.bin", 6<<20, 1<<20)
	close(fx2.origin.gate)
	fx2.waitFills(t, 1)
	if n := fx2.origin.opens.Load(); n != 2 {
		t.Errorf("a range past the fill made %d origin reads, want 2 (fill and range)", n)
	}
}

func TestWrongDigestIsNeverServed(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 1 << 20})
	fx.digest["a.bin"] = strings.Repeat("0", 64)
	fx.readAll(t, "a.bin")
	waitFor(t, "the verification failure", func() bool { return fx.cache.Stats().VerificationFailure == 1 })
	fx.readAll(t, "a.bin")
	if s := fx.cache.Stats(); s.Hits != 0 || s.Entries != 0 {
		t.Errorf("a copy with the wrong digest was kept: %+v", s)
	}
	if left, _ := filepath.Glob(filepath.Join(fx.dir, "*")); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
}

func TestUnknownDigestIsNotCachedWhenRequired(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 1 << 20})
	delete(fx.digest, "a.bin")
	fx.readAll(t, "a.bin")
	fx.readAll(t, "a.bin")
	if s := fx.cache.Stats(); s.Fills != 0 || s.Hits != 0 || fx.origin.opens.Load() != 2 {
		t.Errorf("an unverifiable version was cached: %+v, origin reads %d", s, fx.origin.opens.Load())
	}
}

func TestChangedFileIsDiscarded(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 1 << 20})
	fx.readAll(t, "a.bin")
	fx.waitFills(t, 1)
	data := filepath.Join(fx.dir, entryName("a.bin", fx.info["a.bin"].ETag)+dataSuffix)
	time.Sleep(20 * time.Millisecond) // a modification time the file did not have
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("rot"), 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fx.readAll(t, "a.bin") // served right, from the origin
	if s := fx.cache.Stats(); s.VerificationFailure != 1 || s.Hits != 0 {
		t.Errorf("a changed copy was not caught: %+v", s)
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	const mib = 1 << 20
	fx := newFixture(t, 5*mib/2, map[string]int{"a": mib, "b": mib, "c": mib})
	fx.readAll(t, "a")
	fx.waitFills(t, 1)
	fx.readAll(t, "b")
	fx.waitFills(t, 2)
	fx.readAll(t, "a") // a is now the more recent
	fx.readAll(t, "c")
	fx.waitFills(t, 3)
	s := fx.cache.Stats()
	if s.Evictions != 1 || s.UsedBytes > s.CapacityBytes || s.Entries != 2 {
		t.Fatalf("stats %+v", s)
	}
	before := s.Hits
	fx.readAll(t, "a")
	fx.readAll(t, "c")
	if got := fx.cache.Stats().Hits - before; got != 2 {
		t.Errorf("a and c should be cached (b evicted): %d hits of 2", got)
	}
}

func TestRestartKeepsCheckedEntriesAndDropsDamage(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a": 1 << 20, "b": 1 << 20})
	fx.readAll(t, "a")
	fx.readAll(t, "b")
	fx.waitFills(t, 2)
	_ = fx.cache.Close()
	// b's data cut short as by a crash; a leftover temporary file.
	if err := os.Truncate(filepath.Join(fx.dir, entryName("b", fx.info["b"].ETag)+dataSuffix), 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fx.dir, tmpPrefix+"x"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	fx.open(t, 64<<20)
	waitFor(t, "the check after start", func() bool {
		fx.cache.mu.Lock()
		defer fx.cache.mu.Unlock()
		e := fx.cache.index.get(entryName("a", fx.info["a"].ETag))
		return e != nil && e.checked
	})
	fx.readAll(t, "a")
	fx.readAll(t, "b")
	if s := fx.cache.Stats(); s.Hits != 1 {
		t.Errorf("want a served from the cache and b (truncated) from the origin: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(fx.dir, tmpPrefix+"x")); !os.IsNotExist(err) {
		t.Errorf("a leftover temporary file was kept: %v", err)
	}
}

func TestUnwritableDirectoryFallsBackToOrigin(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a": 1 << 20})
	// Tests run as root, whom permissions do not stop: a file where the directory
	// was refuses every write as a read-only disk would.
	if err := os.RemoveAll(fx.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.dir, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	fx.readAll(t, "a")
	fx.readAll(t, "a")
	if s := fx.cache.Stats(); s.FillErrors != 1 || s.Hits != 0 {
		t.Errorf("stats %+v: want one failed fill, then fills paused", s)
	}
}

func TestStaleOnError(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a": 1 << 20, "b": 1 << 20})
	fx.readAll(t, "a")
	fx.waitFills(t, 1)
	fx.origin.down.Store(true)
	info, err := fx.cache.StatVersion(t.Context(), "a", fx.info["a"].ETag)
	if err != nil || info.Size != fx.info["a"].Size || info.ETag != fx.info["a"].ETag {
		t.Fatalf("cached version while the origin is down: %+v, %v", info, err)
	}
	fx.readAll(t, "a")
	if _, err := fx.cache.StatVersion(t.Context(), "a", "other-version"); err == nil {
		t.Error("another version of a was vouched for")
	}
	if _, err := fx.cache.StatVersion(t.Context(), "b", fx.info["b"].ETag); err == nil {
		t.Error("uncached b was vouched for")
	}
}

// failingOnce cuts the first whole-object read after half of it, as a store that
// drops the connection (or a disk that fills up under the fill) would.
type failingOnce struct {
	*countingStore
	failed atomic.Bool
}

func (s *failingOnce) Open(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	rc, err := s.countingStore.Open(ctx, key, off, n, etag)
	if err != nil || off != 0 || s.failed.Swap(true) {
		return rc, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, n/2), errReader{}), rc}, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) {
	return 0, fmt.Errorf("test: connection reset: %w", objstore.ErrUnavailable)
}

// A fill cut midway hands its followers to the origin at the byte they reached: the
// clients get every byte right, and the cut copy is never kept.
func TestFillCutMidwayFallsBackToOrigin(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 4 << 20})
	origin := &failingOnce{countingStore: fx.origin}
	_ = fx.cache.Close()
	c, err := New(Config{Dir: fx.dir, Size: 64 << 20, Origin: origin, Digests: fx.digest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fx.cache = c
	// A range read starts the fill without streaming it (only a read from offset 0
	// does): the fill's own read is the one cut.
	fx.read(t, "a.bin", 1, 1)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { fx.readAll(t, "a.bin") })
	}
	wg.Wait()
	waitFor(t, "the failed fill counted", func() bool { return c.Stats().FillErrors == 1 })
	// A reader that came after the cut may have started a second fill, which works:
	// then its copy is the only thing on disk, and it is right.
	waitFor(t, "fills settled", func() bool {
		c.mu.Lock()
		running := len(c.fills)
		c.mu.Unlock()
		s := c.Stats()
		return running == 0 && s.Fills == int64(s.Entries)
	})
	s := c.Stats()
	if left, _ := filepath.Glob(filepath.Join(fx.dir, "*")); len(left) != 2*s.Entries {
		t.Errorf("stats %+v, files %v: only verified copies may stay", s, left)
	}
	if s.Entries == 1 {
		before := s.Hits
		fx.readAll(t, "a.bin")
		if c.Stats().Hits != before+1 {
			t.Error("the second fill's copy is not served")
		}
	}
}

// The reader that starts a fill streams from the origin, and the fill writes its
// bytes to disk behind it: one origin read, and the copy is verified and served.
func TestFirstReaderStreamsFromTheOrigin(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 6<<20 + 5})
	rc, err := fx.cache.Open(t.Context(), "a.bin", 0, int64(len(fx.data["a.bin"])), fx.info["a.bin"].ETag)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.(*teeReader); !ok {
		t.Fatalf("the first reader is a %T, not the origin's stream", rc)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, fx.data["a.bin"]) {
		t.Fatalf("first read: %v, right bytes %v", err, bytes.Equal(got, fx.data["a.bin"]))
	}
	fx.waitFills(t, 1)
	fx.readAll(t, "a.bin")
	s := fx.cache.Stats()
	if n := fx.origin.opens.Load(); n != 1 || s.Hits != 1 || s.BytesFromOrigin != int64(len(fx.data["a.bin"])) {
		t.Errorf("origin opened %d times, stats %+v; want one origin read and one hit", n, s)
	}
}

// The first reader's origin stream cut midway is opened again where it stopped; the
// fill, fed up to the cut, reads the rest itself and its copy is right.
func TestFirstReaderCutMidwayReopens(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 4 << 20})
	origin := &failingOnce{countingStore: fx.origin}
	_ = fx.cache.Close()
	c, err := New(Config{Dir: fx.dir, Size: 64 << 20, Origin: origin, Digests: fx.digest, RequireDigest: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fx.cache = c
	fx.readAll(t, "a.bin")
	fx.waitFills(t, 1)
	if s := c.Stats(); s.FillErrors != 0 || s.Entries != 1 {
		t.Fatalf("stats %+v: the fill should have gone on past the reader's cut", s)
	}
	before := c.Stats().Hits
	fx.readAll(t, "a.bin")
	if c.Stats().Hits != before+1 {
		t.Error("the copy is not served")
	}
}

// A cache disk slower than the first reader never slows that reader: with the fill's
// writes held, the reader gets the whole object from the origin at once; the fill,
// fed until feedBuffer was full, then reads the rest from the origin itself once the
// reader is done, and its copy is verified and served.
func TestDiskBehindTheFirstReader(t *testing.T) {
	const size = 3*feedBuffer + 12345
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": size})
	disk := make(chan struct{})
	var writes atomic.Int64
	fx.cache.feedWriteHook = func() {
		<-disk // the disk takes nothing until the reader is done
		writes.Add(1)
	}
	read := make(chan error, 1)
	go func() {
		rc, err := fx.cache.Open(t.Context(), "a.bin", 0, size, fx.info["a.bin"].ETag)
		if err != nil {
			read <- err
			return
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err == nil && !bytes.Equal(got, fx.data["a.bin"]) {
			err = fmt.Errorf("wrong bytes")
		}
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("first reader: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first reader waited for the cache disk")
	}
	if n := fx.origin.opens.Load(); n != 1 {
		t.Fatalf("origin opened %d times before the disk took anything, want once (the reader's stream)", n)
	}
	close(disk)
	fx.waitFills(t, 1)
	if w := writes.Load(); w < 1 || w > feedBuffer/fillChunk+1 {
		t.Errorf("%d fed chunks written, want the feed buffer's worth at most (%d)", w, feedBuffer/fillChunk)
	}
	if n := fx.origin.opens.Load(); n != 2 {
		t.Errorf("origin opened %d times, want twice: the reader's stream, and the fill's for the rest", n)
	}
	hits := fx.cache.Stats().Hits
	fx.readAll(t, "a.bin")
	if s := fx.cache.Stats(); s.Hits != hits+1 || s.Entries != 1 {
		t.Errorf("after the fill: %+v; want the verified copy served", s)
	}
}

// A cached version confirmed by the origin answers StatVersion by itself for
// Revalidate; after that the origin is asked again, and a version replaced there is
// what the caller hears.
func TestStatVersionRevalidates(t *testing.T) {
	fx := newFixture(t, 64<<20, map[string]int{"a.bin": 1 << 20})
	_ = fx.cache.Close()
	c, err := New(Config{Dir: fx.dir, Size: 64 << 20, Origin: fx.origin, Digests: fx.digest, RequireDigest: true,
		Revalidate: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fx.cache = c
	etag := fx.info["a.bin"].ETag
	fx.readAll(t, "a.bin")
	fx.waitFills(t, 1)
	if _, err := c.StatVersion(t.Context(), "a.bin", etag); err != nil { // confirms the entry
		t.Fatal(err)
	}
	asked := fx.origin.stats.Load()
	for range 100 {
		if info, err := c.StatVersion(t.Context(), "a.bin", etag); err != nil || info.ETag != etag {
			t.Fatalf("StatVersion: %+v %v", info, err)
		}
	}
	if n := fx.origin.stats.Load() - asked; n != 0 {
		t.Errorf("100 StatVersion of a confirmed entry asked the origin %d times, want 0", n)
	}
	newer, err := fx.origin.Store.Put(t.Context(), "a.bin", strings.NewReader("replaced"), 8, "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replaced version", func() bool {
		info, err := c.StatVersion(t.Context(), "a.bin", etag)
		return err == nil && info.ETag == newer.ETag
	})
}
