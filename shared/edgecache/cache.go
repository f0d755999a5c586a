// Package edgecache keeps the objects an edge serves on its local disk, in front of
// the object store: a Cache is an objstore.Store whose reads of a whole version (key
// and ETag) are filled once from the origin, verified against the catalog's SHA-256,
// and then served from a local file (with sendfile) until evicted.
//
// What it promises: bytes served from the cache are a copy whose SHA-256 was checked
// after it was written, in a file nobody has touched since; anything else (a fill in
// progress, a failed or unverifiable fill, a full or read-only disk, a file changed
// behind its back) falls back to the origin. The cache holds no record: files and a
// small sidecar per entry, rebuilt by scanning the directory at start.
package edgecache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// ErrNoCatalog is what a Digests answers while it cannot know any digest yet (an
// edge whose catalog is not there yet): nothing is cached meanwhile, without a
// warning per request.
var ErrNoCatalog = errors.New("no catalog to check copies against yet")

// Digests tells the expected content of an object version. SHA256 returns the hex
// SHA-256 of key at etag, or "" when nothing is known about that version.
type Digests interface {
	SHA256(ctx context.Context, key, etag string) (string, error)
}

// Config is what a Cache is built from. Dir, Size and Origin are required.
type Config struct {
	Dir    string         // where entries live; created if missing
	Size   int64          // bytes the entries may take in all
	Origin objstore.Store // the store behind the cache
	// Digests gives the SHA-256 a fill is checked against (nil: none known).
	Digests Digests
	// RequireDigest keeps only fills whose digest Digests knows. Without it, a version
	// the catalog does not know is kept with the digest measured while it was filled,
	// which still protects the copy from later damage on disk (see Open).
	RequireDigest bool
	Logger        *slog.Logger // nil: discard
	// FillTimeout bounds one fill (30 minutes).
	FillTimeout time.Duration
	// Revalidate is how long the origin's word that a cached version is its current
	// one holds (1 s; negative: ask on every request). Within it StatVersion answers
	// from the entry without a round trip to the origin (see StatVersion).
	Revalidate time.Duration
}

// Cache is an objstore.Store that serves whole object versions from local disk.
type Cache struct {
	dir           string
	capacity      int64
	origin        objstore.Store
	digests       Digests
	requireDigest bool
	log           *slog.Logger
	fillTimeout   time.Duration
	revalidate    time.Duration

	ctx    context.Context // ends with Close: fills and checks stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	index index            // verified entries, least recently used first
	fills map[string]*fill // fills in progress by entry name
	// rejected holds, until when, the versions whose last copy failed verification.
	rejected map[string]time.Time
	// pausedUntil stops new fills for a while after the disk refused one (full,
	// read-only): each would fail the same way.
	pausedUntil time.Time

	stats counters

	// feedWriteHook, when set (tests only), runs before each fed chunk is written: a
	// disk as slow as a test needs it.
	feedWriteHook func()
}

var _ objstore.Store = (*Cache)(nil)

// counters are the cache's running totals.
type counters struct {
	hits, misses, stale                  atomic.Int64
	bytesFromCache, bytesFromOrigin      atomic.Int64
	fills, fillErrors, evictions, failed atomic.Int64
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Hits                int64 `json:"hits"`                 // opens served from a verified entry
	Misses              int64 `json:"misses"`               // opens that were not
	StaleHits           int64 `json:"stale_hits"`           // of the hits, answered while the origin was unavailable
	BytesFromCache      int64 `json:"bytes_from_cache"`     // bytes read from entries
	BytesFromOrigin     int64 `json:"bytes_from_origin"`    // bytes read from the origin (fills and misses)
	Fills               int64 `json:"fills"`                // entries written and verified
	FillErrors          int64 `json:"fill_errors"`          // fills that failed (origin, disk)
	Evictions           int64 `json:"evictions"`            // entries removed to make room
	VerificationFailure int64 `json:"verification_failure"` // copies discarded: wrong digest, changed file
	Entries             int   `json:"entries"`
	UsedBytes           int64 `json:"used_bytes"`
	CapacityBytes       int64 `json:"capacity_bytes"`
}

// New opens the cache in cfg.Dir, keeping the entries found there (each is checked
// again before it is first served). A directory that cannot be written is not an
// error: the cache then serves what it has and every fill falls back to the origin.
func New(cfg Config) (*Cache, error) {
	if cfg.Dir == "" || cfg.Size <= 0 || cfg.Origin == nil {
		return nil, errors.New("edge cache: a directory, a positive size and an origin store are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("edge cache: %w", err)
	}
	c := &Cache{
		dir: cfg.Dir, capacity: cfg.Size, origin: cfg.Origin, digests: cfg.Digests,
		requireDigest: cfg.RequireDigest, log: cfg.Logger, fillTimeout: cfg.FillTimeout,
		revalidate: cfg.Revalidate, fills: map[string]*fill{}, rejected: map[string]time.Time{},
	}
	if c.revalidate == 0 {
		c.revalidate = time.Second
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "edgecache")
	if c.fillTimeout <= 0 {
		c.fillTimeout = 30 * time.Minute
	}
	c.index.init()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c, nil
}

// Close stops fills and checks in progress and waits for them.
func (c *Cache) Close() error {
	c.cancel()
	c.wg.Wait()
	return nil
}

// Stats returns the counters now.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	entries, used := c.index.len(), c.index.used
	c.mu.Unlock()
	return Stats{
		Hits: c.stats.hits.Load(), Misses: c.stats.misses.Load(), StaleHits: c.stats.stale.Load(),
		BytesFromCache: c.stats.bytesFromCache.Load(), BytesFromOrigin: c.stats.bytesFromOrigin.Load(),
		Fills: c.stats.fills.Load(), FillErrors: c.stats.fillErrors.Load(), Evictions: c.stats.evictions.Load(),
		VerificationFailure: c.stats.failed.Load(), Entries: entries, UsedBytes: used, CapacityBytes: c.capacity,
	}
}

// Stat asks the origin for the current version of key.
func (c *Cache) Stat(ctx context.Context, key string) (objstore.Info, error) {
	return c.origin.Stat(ctx, key)
}

// StatVersion is Stat for a reader that wants version etag. A verified entry of that
// version answers by itself while the origin confirmed it as current within
// Revalidate: a download manager's many small ranges then cost no round trip to the
// store each (a version replaced at the origin is noticed within Revalidate; until
// then its links get the bytes they name, which the entry holds verified). While the
// origin is unavailable, the entry answers too (stale on error), so its downloads go
// on. Any other answer of the origin is passed on as it is.
func (c *Cache) StatVersion(ctx context.Context, key, etag string) (objstore.Info, error) {
	name := entryName(key, etag)
	c.mu.Lock()
	if e := c.index.get(name); e != nil && e.checked && time.Since(e.confirmed) < c.revalidate {
		c.mu.Unlock()
		return e.info(), nil
	}
	c.mu.Unlock()
	asked := time.Now()
	info, err := c.origin.Stat(ctx, key)
	if err == nil || !errors.Is(err, objstore.ErrUnavailable) {
		if err == nil && info.ETag == etag {
			c.mu.Lock()
			if e := c.index.get(name); e != nil {
				e.confirmed = asked
			}
			c.mu.Unlock()
		}
		return info, err
	}
	c.mu.Lock()
	e := c.index.get(name)
	servable := e != nil && e.checked
	c.mu.Unlock()
	if !servable {
		return info, err
	}
	c.stats.stale.Add(1)
	return e.info(), nil
}

// Put stores through the origin; the cache keeps only what it has read.
func (c *Cache) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (objstore.Info, error) {
	return c.origin.Put(ctx, key, r, size, contentType)
}

// Ping checks the origin.
func (c *Cache) Ping(ctx context.Context) error { return c.origin.Ping(ctx) }

// Open returns length bytes of key at offset. A verified entry of version etag
// serves them from disk; otherwise they come from a fill in progress that has
// reached offset, or from the origin, and a fill of the whole version is started
// if none is running. Without an etag the origin always answers.
func (c *Cache) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	if etag == "" {
		return c.fromOrigin(ctx, key, offset, length, etag)
	}
	name := entryName(key, etag)
	if rd, ok := c.openEntry(name, offset, length); ok {
		c.stats.hits.Add(1)
		return rd, nil
	}
	c.stats.misses.Add(1)
	if rd, ok := c.follow(ctx, name, key, offset, length, etag); ok {
		return rd, nil
	}
	if rd, ok := c.openEntry(name, offset, length); ok {
		return rd, nil // a fill was published between the two looks
	}
	return c.fromOrigin(ctx, key, offset, length, etag)
}

// fromOrigin opens the section at the origin, counting what it reads.
func (c *Cache) fromOrigin(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	rd, err := c.origin.Open(ctx, key, offset, length, etag)
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rd, n: &c.stats.bytesFromOrigin}, nil
}

// countingReader adds what is read through it to n.
type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}
