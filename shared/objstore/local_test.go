package objstore

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLocalStaysInsideItsDirectory(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("top secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newLocal(t)
	mustSymlink(t, filepath.Join(outside, "secret"), filepath.Join(l.Dir(), "file-link"))
	mustSymlink(t, outside, filepath.Join(l.Dir(), "dir-link"))
	mustSymlink(t, "../"+filepath.Base(outside)+"/secret", filepath.Join(l.Dir(), "relative-link"))
	put(t, l, "real/inside.txt", []byte("inside"))
	mustSymlink(t, "real/inside.txt", filepath.Join(l.Dir(), "inside-link"))

	ctx := t.Context()
	for _, key := range []string{"file-link", "dir-link/secret", "relative-link"} {
		if info, err := l.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) followed a link out of the store: %+v", key, info)
		}
		if rc, err := l.Open(ctx, key, 0, -1, ""); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("Open(%q) followed a link out of the store and read %q", key, b)
		}
	}
	if _, err := l.Put(ctx, "dir-link/planted", strings.NewReader("x"), 1, ""); err == nil {
		t.Errorf("Put through a link to another directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Errorf("Put wrote a file outside the store")
	}
	// Links that stay inside are ordinary aliases.
	if got := readAll(t, l, "inside-link", 0, -1, ""); string(got) != "inside" {
		t.Errorf("Open of a link inside the store read %q, want %q", got, "inside")
	}
}

func TestLocalReaderIsASendfileSection(t *testing.T) {
	l := newLocal(t)
	content := randomBytes(t, 1<<20)
	info := put(t, l, "big.bin", content)
	rc, err := l.Open(t.Context(), "big.bin", 1000, 5000, info.ETag)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lr, ok := rc.(*LocalReader)
	if !ok {
		t.Fatalf("Open returned %T, want *LocalReader", rc)
	}
	if lr.Section().R != io.Reader(lr.File()) {
		t.Errorf("the section reads from %T, not from the *os.File net/http can sendfile", lr.Section().R)
	}
	if pos, _ := lr.File().Seek(0, io.SeekCurrent); pos != 1000 || lr.Remaining() != 5000 {
		t.Errorf("file at %d with %d bytes remaining, want 1000 and 5000", pos, lr.Remaining())
	}
	buf := make([]byte, 100)
	if _, err := io.ReadFull(lr, buf); err != nil {
		t.Fatal(err)
	}
	if lr.Remaining() != 4900 {
		t.Errorf("after reading 100 bytes %d remain, want 4900", lr.Remaining())
	}
}

// A real HTTP server copying the reader with io.Copy goes through WriteTo and the
// response writer's ReadFrom and delivers exactly the section. With Content-Length
// set (a chunked response never qualifies), that is sendfile(2): checked by hand with
// strace -f -e trace=sendfile.
func TestLocalReaderServedOverHTTP(t *testing.T) {
	l := newLocal(t)
	content := randomBytes(t, 3<<20)
	put(t, l, "served.bin", content)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc, err := l.Open(r.Context(), "served.bin", 12345, 2<<20, "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(rc.(*LocalReader).Remaining(), 10))
		if _, err := io.Copy(w, rc); err != nil {
			t.Errorf("copy: %v", err)
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := content[12345 : 12345+2<<20]; string(got) != string(want) {
		t.Errorf("served %d bytes that differ from the %d-byte section", len(got), len(want))
	}
}

func TestLocalPutIsAtomic(t *testing.T) {
	l := newLocal(t)
	v1 := put(t, l, "pkg/app.bin", []byte(strings.Repeat("1", 1000)))
	// A download already running keeps reading the version it opened.
	rc, err := l.Open(t.Context(), "pkg/app.bin", 0, -1, v1.ETag)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	put(t, l, "pkg/app.bin", []byte(strings.Repeat("2", 500)))
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.Repeat("1", 1000) {
		t.Errorf("a reader opened before the overwrite read %d bytes of a mix, want the whole old version", len(got))
	}
	// Failed and successful writes leave no temporary files behind.
	_, _ = l.Put(t.Context(), "pkg/app.bin", errReader{errors.New("boom")}, -1, "")
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "pkg"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "app.bin" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("pkg/ holds %v, want only app.bin", names)
	}
}

func TestLocalServesRegularFilesOnly(t *testing.T) {
	l := newLocal(t)
	if err := syscall.Mkfifo(filepath.Join(l.Dir(), "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(l.Dir(), "folder"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"fifo", "folder"} {
		done := make(chan error, 1)
		go func() {
			rc, err := l.Open(t.Context(), key, 0, -1, "")
			if err == nil {
				rc.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Open(%q): %v, want ErrNotFound", key, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%q) hangs", key)
		}
		if _, err := l.Stat(t.Context(), key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%q): %v, want ErrNotFound", key, err)
		}
	}
}

// A directory replaced under the same path (a volume remounted) is read within
// rootTTL: Stat and Open share a handle of the directory at most that old.
func TestLocalDirectoryReplaced(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, l, "a.txt", []byte("old"))
	old, err := l.Stat(t.Context(), "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, filepath.Join(parent, "unmounted")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("new!"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(rootTTL + 5*time.Second)
	for {
		info, err := l.Stat(t.Context(), "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		if info.Size == 4 && info.ETag != old.ETag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still reading the replaced directory %s after the handle's %s", time.Since(deadline.Add(-rootTTL-5*time.Second)), rootTTL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc, err := l.Open(t.Context(), "a.txt", 0, 4, "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "new!" {
		t.Fatalf("Open read %q from the replaced directory, want the new file", got)
	}
}

func TestLocalDirectoryGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, l, "a.txt", []byte("a"))
	ctx := t.Context()
	if _, err := l.Stat(ctx, "a.txt"); err != nil { // the shared handle is open now
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_, statErr := l.Stat(ctx, "a.txt")
	for op, err := range map[string]error{"Ping": l.Ping(ctx), "Stat": statErr} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the directory gone: %v, want ErrUnavailable", op, err)
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err != nil {
		t.Errorf("Ping after the directory came back: %v", err)
	}
}

func TestNewLocalNeedsADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(t.TempDir(), "missing")} {
		if _, err := NewLocal(dir); err == nil {
			t.Errorf("NewLocal(%s) succeeded", dir)
		}
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
