package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is an HTTP server with real RFC 9110 range handling (http.ServeContent) and
// what the tests need to observe or provoke: bytes sent, a cap on concurrent
// requests answered with 429, a replaceable object.
type origin struct {
	mu       sync.Mutex
	data     []byte
	etag     string
	sent     atomic.Int64
	active   atomic.Int32
	peak     atomic.Int32
	maxConns int32
	gone     atomic.Bool
	noHead   bool // refuse HEAD with 403, as a presigned S3 GET URL does
	srv      *httptest.Server
}

func newOrigin(t *testing.T, data []byte) *origin {
	o := &origin{data: data, etag: `"v1"`}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) replace(data []byte, etag string) {
	o.mu.Lock()
	o.data, o.etag = data, etag
	o.mu.Unlock()
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	if o.gone.Load() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		w.Write([]byte(`{"error":"download link expired","hint":"request a new ticket for this file"}`))
		return
	}
	if o.noHead && r.Method == http.MethodHead {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if r.Method == http.MethodGet {
		n := o.active.Add(1)
		defer o.active.Add(-1)
		if o.maxConns > 0 && n > o.maxConns {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		for {
			p := o.peak.Load()
			if n <= p || o.peak.CompareAndSwap(p, n) {
				break
			}
		}
	}
	o.mu.Lock()
	data, etag := o.data, o.etag
	o.mu.Unlock()
	w.Header().Set("ETag", etag)
	time.Sleep(2 * time.Millisecond) // keep requests overlapping, as over a real network
	http.ServeContent(countingWriter{w, &o.sent}, r, "", time.Time{}, bytes.NewReader(data))
}

func randomData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hexSHA256(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func readPart(t *testing.T, part string) []byte {
	t.Helper()
	got, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A link that refuses HEAD (direct mode's presigned URLs) is probed with a one-byte
// range and still downloaded in parallel ranges.
func TestDownloadWithoutHead(t *testing.T) {
	data := randomData(1<<20 + 777)
	o := newOrigin(t, data)
	o.noHead = true
	part := filepath.Join(t.TempDir(), "f.part")
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 4, ChunkSize: 128 << 10, Hash: true})
	if _, err := d.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := readPart(t, part); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("downloaded bytes differ from the object (%d vs %d bytes)", len(got), len(data))
	}
	if o.peak.Load() < 2 {
		t.Errorf("at most %d request at once: the probe should have found range support", o.peak.Load())
	}
}

func TestParallelDownloadIsExact(t *testing.T) {
	data := randomData(3<<20 + 12345)
	o := newOrigin(t, data)
	part := filepath.Join(t.TempDir(), "f.part")
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 4, ChunkSize: 256 << 10, Hash: true})
	res, err := d.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := readPart(t, part); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("downloaded bytes differ from the object (%d vs %d bytes)", len(got), len(data))
	}
	if want := hexSHA256(data); res.SHA256 != want {
		t.Fatalf("SHA-256 computed while downloading %q, want %q", res.SHA256, want)
	}
	// Parallelism is judged by the origin, which saw the requests at once; the client's
	// own peak counts requests streaming at the same instant, which a loaded machine
	// may serialize even though they were all open.
	if res.Connections < 1 || o.peak.Load() < 2 {
		t.Fatalf("used %d connections (origin saw %d at once), want parallel ranges", res.Connections, o.peak.Load())
	}
	if done, size, _ := d.Progress(); done != size || size != int64(len(data)) {
		t.Fatalf("progress %d/%d at the end", done, size)
	}
}

func TestResumeFetchesOnlyWhatIsMissing(t *testing.T) {
	data := randomData(4 << 20)
	o := newOrigin(t, data)
	part := filepath.Join(t.TempDir(), "f.part")
	// A first run stopped part way: cancel once about half has arrived.
	ctx, cancel := context.WithCancel(t.Context())
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 2, ChunkSize: 512 << 10, MaxRate: 4 << 20, Hash: true})
	go func() {
		for {
			if done, _, _ := d.Progress(); done >= 2<<20 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := d.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want canceled", err)
	}
	st, err := loadState(part)
	if err != nil || st == nil || total(st.Done) < 1<<20 {
		t.Fatalf("state after the interrupted run: %+v, %v", st, err)
	}
	kept := total(st.Done)
	before := o.sent.Load()
	res, err := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 3, Hash: true}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readPart(t, part), data) {
		t.Fatal("resumed file differs from the object")
	}
	if want := hexSHA256(data); res.SHA256 != want { // the resumed bytes are hashed too
		t.Fatalf("SHA-256 of the resumed download %q, want %q", res.SHA256, want)
	}
	if res.Resumed != kept || res.Restarted != "" {
		t.Fatalf("resumed %d bytes (restarted: %q), state said %d", res.Resumed, res.Restarted, kept)
	}
	if sent := o.sent.Load() - before; sent != int64(len(data))-kept {
		t.Fatalf("the resume fetched %d bytes, want only the missing %d", sent, int64(len(data))-kept)
	}
}

func TestChangedObjectStartsOverInsteadOfMixing(t *testing.T) {
	v1 := randomData(2 << 20)
	o := newOrigin(t, v1)
	part := filepath.Join(t.TempDir(), "f.part")
	ctx, cancel := context.WithCancel(t.Context())
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 1, ChunkSize: 256 << 10, MaxRate: 2 << 20})
	go func() {
		for {
			if done, _, _ := d.Progress(); done >= 512<<10 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	d.Run(ctx)
	v2 := bytes.Repeat([]byte("new version "), 200_000)[:2<<20] // same size, other bytes
	o.replace(v2, `"v2"`)
	res, err := New(Options{URL: o.srv.URL, Part: part, Object: "x"}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Restarted == "" || res.Resumed != 0 {
		t.Fatalf("a changed object was resumed (resumed %d, restarted %q)", res.Resumed, res.Restarted)
	}
	if !bytes.Equal(readPart(t, part), v2) {
		t.Fatal("the file mixes versions or differs from the new version")
	}
}

func TestChangeDuringDownloadIsRefusedByIfRange(t *testing.T) {
	o := newOrigin(t, randomData(1<<20))
	part := filepath.Join(t.TempDir(), "f.part")
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 1, ChunkSize: 64 << 10, MaxRate: 1 << 20})
	go func() {
		for {
			if done, _, _ := d.Progress(); done >= 128<<10 {
				o.replace(randomData(1<<20), `"v2"`)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if _, err := d.Run(t.Context()); !errors.Is(err, ErrChanged) {
		t.Fatalf("got %v, want ErrChanged", err)
	}
}

func TestTooManyConnectionsUsesFewer(t *testing.T) {
	data := randomData(2 << 20)
	o := newOrigin(t, data)
	o.maxConns = 2
	part := filepath.Join(t.TempDir(), "f.part")
	res, err := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 8, ChunkSize: 128 << 10}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readPart(t, part), data) {
		t.Fatal("file differs")
	}
	if res.Connections > 2 {
		t.Fatalf("streamed on %d connections at once; the server allows 2", res.Connections)
	}
}

func TestGoneLinkKeepsWhatArrived(t *testing.T) {
	o := newOrigin(t, randomData(2<<20))
	part := filepath.Join(t.TempDir(), "f.part")
	d := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 1, ChunkSize: 128 << 10, MaxRate: 2 << 20})
	go func() {
		for {
			if done, _, _ := d.Progress(); done >= 256<<10 {
				o.gone.Store(true)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	_, err := d.Run(t.Context())
	if !errors.Is(err, ErrGone) {
		t.Fatalf("got %v, want ErrGone", err)
	}
	st, _ := loadState(part)
	if st == nil || total(st.Done) < 256<<10 {
		t.Fatalf("state after the link went away: %+v", st)
	}
}

func TestMissingAndMerge(t *testing.T) {
	done := merge([]span{{10, 20}, {0, 5}, {5, 8}, {18, 30}})
	if want := []span{{0, 8}, {10, 30}}; !equalSpans(done, want) {
		t.Fatalf("merge: %v, want %v", done, want)
	}
	if got, want := missing(done, 40), []span{{8, 10}, {30, 40}}; !equalSpans(got, want) {
		t.Fatalf("missing: %v, want %v", got, want)
	}
}

func equalSpans(a, b []span) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestIdleConnectionsTakeOverTails(t *testing.T) {
	data := randomData(8 << 20)
	o := newOrigin(t, data)
	part := filepath.Join(t.TempDir(), "f.part")
	// One range for the whole object: only splitting it lets a second connection work.
	res, err := New(Options{URL: o.srv.URL, Part: part, Object: "x", Connections: 3, ChunkSize: 8 << 20, MaxRate: 16 << 20, Hash: true}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readPart(t, part), data) {
		t.Fatal("file differs")
	}
	if want := hexSHA256(data); res.SHA256 != want {
		t.Fatalf("SHA-256 with split tails %q, want %q", res.SHA256, want)
	}
	if res.Connections < 2 {
		t.Fatalf("one range was never split: %d connection(s) at once", res.Connections)
	}
	// Every byte is written once: a shortened request stops at its new end.
	if res.Fetched != int64(len(data)) {
		t.Fatalf("received %d bytes into the file for a %d-byte object", res.Fetched, len(data))
	}
}
