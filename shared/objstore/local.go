package objstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Local is a Store over a directory: the object under key is the file <dir>/<key>.
// It serves the all-in-one mode and single-machine deployments.
//
// Every access goes through an os.Root opened on the directory, so neither a key nor
// a symbolic link inside the directory can reach a file outside it. Stat and Open, on
// every download request, share one handle of the directory opened at most rootTTL
// ago; Put and Ping open it afresh. A volume remounted under the same path is thus
// picked up within rootTTL, and a vanished directory fails Ping (readiness) at once.
//
// Only regular files are objects. A key that names anything else — a directory, a
// FIFO, a socket, a device, a symbolic link leading out of the directory or into a
// loop — is answered ErrNotFound, exactly as a missing file, so a client learns
// nothing about what lies in the directory; the operator is told with a warning in
// the log naming the path and why.
//
// Local keeps no metadata besides the files themselves: the content type comes from
// the key's extension, whatever Put was given.
type Local struct {
	dir string
	log *slog.Logger
	// escapes is the error os.Root reports for a path that leads out of it. The os
	// package does not export it (golang/go#74640), so NewLocal asks its root for it
	// once, and refusals are then told apart with errors.Is, not by the message.
	escapes error

	mu     sync.Mutex
	shared *sharedRoot // the handle Stat and Open use; nil until the first
}

// rootTTL is how long Stat and Open use one handle of the directory before opening
// it again: opening it on every call was a sixth of a small range's cost.
const rootTTL = time.Second

// sharedRoot is a handle of the directory that calls share, closed once it has been
// replaced and the last call using it is done.
type sharedRoot struct {
	root    *os.Root
	opened  time.Time
	refs    int
	retired bool
}

var _ Store = (*Local)(nil)

// LocalOption configures a Local store.
type LocalOption func(*Local)

// WithLogger sets the logger that tells the operator about files the store refuses
// to serve (default: slog.Default()).
func WithLogger(log *slog.Logger) LocalOption {
	return func(l *Local) {
		if log != nil {
			l.log = log
		}
	}
}

// NewLocal returns a store over dir, which must be an existing directory.
func NewLocal(dir string, opts ...LocalOption) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("local store %s: not a directory", abs)
	}
	l := &Local{dir: abs, log: slog.Default()}
	for _, o := range opts {
		o(l)
	}
	l.log = l.log.With("component", "objstore", "dir", abs)
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	defer root.Close()
	if _, err := root.Stat(".."); err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			l.escapes = pe.Err
		}
	}
	return l, nil
}

// Dir returns the absolute path of the store's directory.
func (l *Local) Dir() string { return l.dir }

// Stat returns the current version of key.
func (l *Local) Stat(ctx context.Context, key string) (info Info, err error) {
	err = l.inRoot(ctx, key, func(root *os.Root) error {
		fi, err := root.Stat(filepath.FromSlash(key))
		if err != nil {
			return l.fileError(ctx, root, "stat", key, err)
		}
		if !fi.Mode().IsRegular() {
			return l.refuse(ctx, "stat", key, "not a regular file but "+fileKind(fi.Mode()))
		}
		info = localInfo(key, fi)
		return nil
	})
	return info, err
}

// Open returns a *LocalReader over the requested section of key.
func (l *Local) Open(ctx context.Context, key string, offset, length int64, etag string) (rc io.ReadCloser, err error) {
	err = l.inRoot(ctx, key, func(root *os.Root) error {
		name := filepath.FromSlash(key)
		// Only a regular file is opened: opening a device can have effects of its own.
		// The file itself is checked again once open, in case it was replaced between.
		fi, err := root.Stat(name)
		if err != nil {
			return l.fileError(ctx, root, "open", key, err)
		}
		if !fi.Mode().IsRegular() {
			return l.refuse(ctx, "open", key, "not a regular file but "+fileKind(fi.Mode()))
		}
		// O_NONBLOCK keeps a FIFO planted in the directory from blocking the open; it
		// has no effect on regular files, the only kind served.
		f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return l.fileError(ctx, root, "open", key, err)
		}
		r, err := l.openSection(ctx, f, key, offset, length, etag)
		if err != nil {
			f.Close()
			return err
		}
		rc = r
		return nil
	})
	return rc, err
}

// openSection checks the version and range against the open file itself, so the
// bytes served belong to the version that was checked.
func (l *Local) openSection(ctx context.Context, f *os.File, key string, offset, length int64, etag string) (*LocalReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, l.refuse(ctx, "open", key, "not a regular file but "+fileKind(fi.Mode()))
	}
	info := localInfo(key, fi)
	if etag != "" && etag != info.ETag {
		return nil, fmt.Errorf("open %q: has ETag %s, want %s: %w", key, info.ETag, etag, ErrChanged)
	}
	if err := checkRange(offset, length, info.Size); err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	if length < 0 {
		length = info.Size - offset
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	return &LocalReader{file: f, section: io.LimitedReader{R: f, N: length}}, nil
}

// Put writes r to a temporary file next to key, syncs it and renames it over key,
// so readers see the old version or the new one, never a partial file.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, size int64, _ string) (Info, error) {
	root, err := l.enter(ctx, key)
	if err != nil {
		return Info{}, err
	}
	defer root.Close()
	name := filepath.FromSlash(key)
	dir := filepath.Dir(name)
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return Info{}, fmt.Errorf("put %q: %w", key, err)
	}
	tmp := filepath.Join(dir, ".sluice-put-"+rand.Text()+".tmp")
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Info{}, fmt.Errorf("put %q: %w", key, err)
	}
	fi, err := writeSynced(ctx, f, r, size)
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return Info{}, fmt.Errorf("put %q: %w", key, err)
	}
	// The rename is durable only once the directory entry is.
	if err := syncDir(root, dir); err != nil {
		return Info{}, fmt.Errorf("put %q: %w", key, err)
	}
	return localInfo(key, fi), nil
}

// writeSynced copies r (exactly size bytes unless size < 0) into f, syncs and
// closes f, and returns its final metadata.
func writeSynced(ctx context.Context, f *os.File, r io.Reader, size int64) (fs.FileInfo, error) {
	src := ctxReader{ctx: ctx, r: r}
	var err error
	if size >= 0 {
		var n int64
		n, err = io.CopyN(f, src, size)
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("body ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
		}
	} else {
		_, err = io.Copy(f, src)
	}
	if err == nil {
		err = f.Sync()
	}
	var fi fs.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	return fi, errors.Join(err, f.Close())
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Ping checks that the directory is still there.
func (l *Local) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := l.root()
	if err != nil {
		return err
	}
	return root.Close()
}

// enter validates key and opens the store's directory for one call.
func (l *Local) enter(ctx context.Context, key string) (*os.Root, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.root()
}

// inRoot validates key and runs fn in the shared handle of the directory. A key not
// found there is looked up once more in a handle opened for it: the shared one may
// be up to rootTTL old, its directory since replaced or gone, and a client must
// hear 404 only for what the directory really lacks (else: 503, ErrUnavailable).
func (l *Local) inRoot(ctx context.Context, key string, fn func(*os.Root) error) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	shared, fresh, err := l.acquire(false)
	if err != nil {
		return err
	}
	err = fn(shared.root)
	l.release(shared)
	if fresh || !errors.Is(err, ErrNotFound) || errors.Is(err, errRefused) {
		return err
	}
	if shared, _, err = l.acquire(true); err != nil {
		return err
	}
	defer l.release(shared)
	return fn(shared.root)
}

// acquire returns the shared handle of the directory, opened again when it is rootTTL
// old or renew is set, and whether it was opened for this call; release gives it back.
func (l *Local) acquire(renew bool) (_ *sharedRoot, fresh bool, _ error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.shared; r != nil && !renew && time.Since(r.opened) < rootTTL {
		r.refs++
		return r, false, nil
	}
	root, err := l.root()
	if err != nil {
		return nil, false, err
	}
	if old := l.shared; old != nil {
		old.retired = true
		if old.refs == 0 {
			_ = old.root.Close()
		}
	}
	l.shared = &sharedRoot{root: root, opened: time.Now(), refs: 1}
	return l.shared, true, nil
}

func (l *Local) release(r *sharedRoot) {
	l.mu.Lock()
	r.refs--
	done := r.retired && r.refs == 0
	l.mu.Unlock()
	if done {
		_ = r.root.Close()
	}
}

func (l *Local) root() (*os.Root, error) {
	root, err := os.OpenRoot(l.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return root, nil
}

// fileError maps what the file system answered for a key. A missing file, or a file
// where a folder of the key should be, is ErrNotFound. A path the store refuses to
// follow (a link out of the directory or into a loop; a socket, which cannot be
// opened) is ErrNotFound for the client and a warning for the operator. A name the
// file system finds too long is the client's ErrInvalidKey. Anything else (EACCES,
// EIO) is the store's own failure.
func (l *Local) fileError(ctx context.Context, root *os.Root, op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s %q: %w", op, key, ErrNotFound)
	case l.escapes != nil && errors.Is(err, l.escapes):
		return l.refuse(ctx, op, key, "a symbolic link leads out of the object directory"+linkDetail(root, key))
	case errors.Is(err, syscall.ELOOP):
		return l.refuse(ctx, op, key, "too many levels of symbolic links"+linkDetail(root, key))
	case errors.Is(err, syscall.ENXIO):
		return l.refuse(ctx, op, key, "not a regular file (the open failed: no such device or address)")
	case errors.Is(err, syscall.ENAMETOOLONG):
		return fmt.Errorf("%w %q: a name is too long for the file system of the object directory", ErrInvalidKey, truncateKey(key))
	}
	return fmt.Errorf("%s %q: %w", op, key, err)
}

// refuse answers a key that names something other than a regular file inside the
// directory: the client is told what a missing file would tell it, the operator the
// path and the reason.
func (l *Local) refuse(ctx context.Context, op, key, why string) error {
	l.log.WarnContext(ctx, "object refused: not served to clients", "op", op,
		"path", filepath.Join(l.dir, filepath.FromSlash(key)), "reason", why)
	return fmt.Errorf("%s %q: %w", op, key, errRefused)
}

// errRefused is ErrNotFound, word for word, for what the store refuses to serve
// (refuse): the path is there, so looking again in a fresh handle of the directory
// (inRoot) is no use.
var errRefused error = refusedError{}

type refusedError struct{}

func (refusedError) Error() string        { return ErrNotFound.Error() }
func (refusedError) Is(target error) bool { return target == ErrNotFound }

// linkDetail names the first symbolic link on key's path and its target, for the
// operator's warning; "" when there is none to name.
func linkDetail(root *os.Root, key string) string {
	prefix := ""
	for seg := range strings.SplitSeq(key, "/") {
		prefix = path.Join(prefix, seg)
		fi, err := root.Lstat(filepath.FromSlash(prefix))
		if err != nil {
			return ""
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := root.Readlink(filepath.FromSlash(prefix))
			if err != nil {
				return ""
			}
			return fmt.Sprintf(" (%s -> %s)", prefix, target)
		}
	}
	return ""
}

// fileKind names a mode that is not a regular file's, for the operator.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "an irregular file (" + m.Type().String() + ")"
}

func localInfo(key string, fi fs.FileInfo) Info {
	return Info{
		Key:         key,
		Size:        fi.Size(),
		ETag:        localETag(fi),
		ContentType: defaultContentType(key),
		ModTime:     fi.ModTime(),
	}
}

// localETag changes whenever the file does: Put replaces the file (new inode), and
// an in-place edit changes the size or the modification time.
func localETag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return strconv.FormatInt(fi.Size(), 16) + "-" +
		strconv.FormatInt(fi.ModTime().UnixNano(), 16) + "-" +
		strconv.FormatUint(ino, 16)
}

// LocalReader reads one section of a local file. Its bytes come through an
// *io.LimitedReader over the *os.File, the shape net/http's response writer (and
// *net.TCPConn) recognise to send the section with sendfile(2) instead of copying
// it through user space: io.Copy(w, r) takes that path by itself through WriteTo,
// provided the response has a Content-Length (net/http never sendfiles a chunked body).
type LocalReader struct {
	file    *os.File
	section io.LimitedReader
}

// Read reads from the section.
func (r *LocalReader) Read(p []byte) (int, error) { return r.section.Read(p) }

// WriteTo copies the rest of the section to w, letting w use sendfile(2) when it can.
func (r *LocalReader) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, &r.section) }

// Section returns the reader of the rest of the section: an *io.LimitedReader whose
// R is File(), positioned at the next byte to send.
func (r *LocalReader) Section() *io.LimitedReader { return &r.section }

// File returns the open file; its offset is the next byte of the section.
func (r *LocalReader) File() *os.File { return r.file }

// Remaining returns how many bytes of the section are left to read.
func (r *LocalReader) Remaining() int64 { return r.section.N }

// Close closes the file.
func (r *LocalReader) Close() error { return r.file.Close() }

// ctxReader stops a long copy once its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
