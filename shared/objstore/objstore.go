// Package objstore reads and writes the objects sluice serves, from S3-compatible
// storage (MinIO, AWS S3) or from a local directory, behind one small interface.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"path"
	"time"
)

// Sentinel errors callers branch on. Implementations wrap their own errors with these.
var (
	// ErrNotFound means no object exists under the key.
	ErrNotFound = errors.New("object not found")
	// ErrChanged means the object no longer has the ETag the caller asked for.
	ErrChanged = errors.New("object changed")
	// ErrUnavailable means the storage backend cannot be reached (or its breaker is open).
	ErrUnavailable = errors.New("object store unavailable")
	// ErrInvalidKey means the key is not acceptable as an object name.
	ErrInvalidKey = errors.New("invalid object key")
)

// Info describes one stored object version.
type Info struct {
	Key         string
	Size        int64
	ETag        string // opaque, without quotes; changes whenever the content changes
	ContentType string
	ModTime     time.Time
}

// Store is the storage every role talks to.
type Store interface {
	// Stat returns the current version of key.
	Stat(ctx context.Context, key string) (Info, error)
	// Open returns length bytes of key starting at offset (length < 0: to the end).
	// If etag is not empty and the object's ETag differs, it fails with ErrChanged
	// so that a resumed download never mixes two versions. The section must lie
	// within the object: a start beyond the end, or an end beyond the end, is an
	// error rather than a short read (an empty object can be opened whole).
	Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error)
	// Put stores r (size bytes, -1 if unknown) under key and returns the new version.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (Info, error)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
}

// errRange reports a section that does not lie within the object. Callers validate
// ranges against Stat before opening, so this is a bug or a race, not a client error.
var errRange = errors.New("range outside the object")

// checkRange enforces Open's section rules for an object of size bytes.
func checkRange(offset, length, size int64) error {
	switch {
	case offset < 0:
		return fmt.Errorf("%w: negative offset %d", errRange, offset)
	case length < 0 && offset >= size && !(offset == 0 && size == 0):
		return fmt.Errorf("%w: offset %d, size %d", errRange, offset, size)
	case length >= 0 && length > size-offset:
		return fmt.Errorf("%w: %d bytes at offset %d, size %d", errRange, length, offset, size)
	}
	return nil
}

// defaultContentType guesses a MIME type from the key's extension, as a browser
// would need it to decide between showing and saving.
func defaultContentType(key string) string {
	if t := mime.TypeByExtension(path.Ext(key)); t != "" {
		return t
	}
	return "application/octet-stream"
}
