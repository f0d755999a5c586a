// Package objstore reads and writes the objects sluice serves, from S3-compatible
// storage (MinIO, AWS S3) or from a local directory, behind one small interface.
package objstore

import (
	"context"
	"errors"
	"io"
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
	// so that a resumed download never mixes two versions.
	Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error)
	// Put stores r (size bytes, -1 if unknown) under key and returns the new version.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (Info, error)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
}
