package objstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Local is a Store over a directory: the object under key is the file <dir>/<key>.
// It serves the all-in-one mode and single-machine deployments.
//
// Every access goes through an os.Root opened on the directory, so neither a key nor
// a symbolic link inside the directory can reach a file outside it. The directory is
// reopened on every call, so a volume remounted under the same path is picked up and
// a vanished directory reports ErrUnavailable.
//
// Local keeps no metadata besides the files themselves: the content type comes from
// the key's extension, whatever Put was given.
type Local struct {
	dir string
}

var _ Store = (*Local)(nil)

// NewLocal returns a store over dir, which must be an existing directory.
func NewLocal(dir string) (*Local, error) {
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
	return &Local{dir: abs}, nil
}

// Dir returns the absolute path of the store's directory.
func (l *Local) Dir() string { return l.dir }

// Stat returns the current version of key.
func (l *Local) Stat(ctx context.Context, key string) (Info, error) {
	root, err := l.enter(ctx, key)
	if err != nil {
		return Info{}, err
	}
	defer root.Close()
	fi, err := root.Stat(filepath.FromSlash(key))
	if err != nil {
		return Info{}, fileError("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("stat %q: not a regular file: %w", key, ErrNotFound)
	}
	return localInfo(key, fi), nil
}

// Open returns a *LocalReader over the requested section of key.
func (l *Local) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	root, err := l.enter(ctx, key)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// O_NONBLOCK keeps a FIFO planted in the directory from blocking the open; it has
	// no effect on regular files, the only kind served.
	f, err := root.OpenFile(filepath.FromSlash(key), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fileError("open", key, err)
	}
	r, err := openSection(f, key, offset, length, etag)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// openSection checks the version and range against the open file itself, so the
// bytes served belong to the version that was checked.
func openSection(f *os.File, key string, offset, length int64, etag string) (*LocalReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open %q: not a regular file: %w", key, ErrNotFound)
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

func (l *Local) root() (*os.Root, error) {
	root, err := os.OpenRoot(l.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return root, nil
}

// fileError maps a missing file — or a file where a folder of the key should be —
// to ErrNotFound.
func fileError(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s %q: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("%s %q: %w", op, key, err)
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
