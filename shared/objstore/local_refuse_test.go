package objstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// refusals is a store whose directory holds, besides regular files, everything a
// careless or hostile operator could leave in it, and the file outside that no key
// may reach.
type refusals struct {
	store  *Local
	warns  *warnings
	secret []byte
	// refused maps each key that names something the store must not serve to the
	// words its warning must contain.
	refused map[string]string
}

func newRefusals(t testing.TB) *refusals {
	t.Helper()
	outside := t.TempDir()
	secret := []byte("top secret, outside the object directory")
	must(t, os.WriteFile(filepath.Join(outside, "secret"), secret, 0o644))
	dir := t.TempDir()
	warns := newWarnings()
	l, err := NewLocal(dir, WithLogger(slog.New(warns)))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "real", "folder"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "real", "inside.txt"), []byte("inside"), 0o644))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "file-link")))
	must(t, os.Symlink(outside, filepath.Join(dir, "dir-link")))
	must(t, os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "relative-link")))
	must(t, os.Symlink("../../"+filepath.Base(outside), filepath.Join(dir, "real", "up-link")))
	must(t, os.Symlink("loop", filepath.Join(dir, "loop")))
	must(t, os.Symlink("ping", filepath.Join(dir, "pong")))
	must(t, os.Symlink("pong", filepath.Join(dir, "ping")))
	must(t, os.Symlink("real/folder", filepath.Join(dir, "folder-link")))
	must(t, os.Symlink("/dev/null", filepath.Join(dir, "devnull-link")))
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	sock, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	r := &refusals{store: l, warns: warns, secret: secret, refused: map[string]string{
		"file-link":           "symbolic link leads out of the object directory (file-link -> " + outside,
		"dir-link/secret":     "symbolic link leads out of the object directory (dir-link -> " + outside,
		"relative-link":       "symbolic link leads out of the object directory (relative-link -> ../",
		"real/up-link/secret": "symbolic link leads out of the object directory (real/up-link -> ../../",
		"devnull-link":        "symbolic link leads out of the object directory (devnull-link -> /dev/null)",
		"loop":                "too many levels of symbolic links (loop -> loop)",
		"ping":                "too many levels of symbolic links (ping -> pong)",
		"fifo":                "not a regular file but a FIFO",
		"sock":                "not a regular file but a socket",
		"real":                "not a regular file but a directory",
		"real/folder":         "not a regular file but a directory",
		"folder-link":         "not a regular file but a directory",
	}}
	// A device node needs CAP_MKNOD; where the test may make one, it is refused too.
	if err := syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, 1<<8|3); err == nil {
		r.refused["null"] = "not a regular file but a device"
	}
	return r
}

func TestLocalRefusesWhatIsNotARegularFileInside(t *testing.T) {
	r := newRefusals(t)
	ctx := t.Context()
	for key, reason := range r.refused {
		t.Run(key, func(t *testing.T) {
			_, statErr := r.store.Stat(ctx, key)
			rc, openErr := r.store.Open(ctx, key, 0, -1, "")
			if openErr == nil {
				rc.Close()
			}
			for op, err := range map[string]error{"stat": statErr, "open": openErr} {
				// The client's answer is the one a missing file gets: nothing about
				// the directory's contents leaks into it.
				if want := fmt.Sprintf("%s %q: %v", op, key, ErrNotFound); err == nil || err.Error() != want || !errors.Is(err, ErrNotFound) {
					t.Errorf("%s(%q) = %v, want %q (ErrNotFound)", op, key, err, want)
				}
				w, ok := r.warns.find(op, key)
				if !ok {
					t.Errorf("%s(%q): no warning for the operator; got %v", op, key, r.warns.all())
					continue
				}
				if !strings.Contains(w, reason) || !strings.Contains(w, filepath.Join(r.store.Dir(), key)) {
					t.Errorf("%s(%q) warned %q, want the path and %q", op, key, w, reason)
				}
			}
		})
	}
	// A missing file is no news for the operator, and a link that stays inside is an
	// ordinary alias.
	r.warns.reset()
	if _, err := r.store.Stat(ctx, "missing/file"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(missing) = %v", err)
	}
	if got := readAll(t, r.store, "real/inside.txt", 0, -1, ""); string(got) != "inside" {
		t.Errorf("read %q", got)
	}
	if w := r.warns.all(); len(w) != 0 {
		t.Errorf("warnings for a missing file and a regular one: %v", w)
	}
}

// warnings is a slog handler that keeps the warnings logged, one line each; the
// handlers derived from it with With share its lines.
type warnings struct {
	log   *warnLog
	attrs []slog.Attr
}

type warnLog struct {
	mu    sync.Mutex
	lines []string
}

func newWarnings() *warnings { return &warnings{log: &warnLog{}} }

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%s", a.Key, a.Value); return true }
	for _, a := range w.attrs {
		write(a)
	}
	r.Attrs(write)
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	w.log.lines = append(w.log.lines, b.String())
	return nil
}

func (w *warnings) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnings{log: w.log, attrs: append(append([]slog.Attr(nil), w.attrs...), as...)}
}

func (w *warnings) WithGroup(string) slog.Handler { return w }

func (w *warnings) all() []string {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	return append([]string(nil), w.log.lines...)
}

func (w *warnings) reset() {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	w.log.lines = nil
}

func (w *warnings) find(op, key string) (string, bool) {
	for _, l := range w.all() {
		if strings.Contains(l, " op="+op+" ") && strings.Contains(l, string(filepath.Separator)+key+" ") {
			return l, true
		}
	}
	return "", false
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
