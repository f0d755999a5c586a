package edgecache

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// On disk an entry is two files named for its key and ETag: <name>.data, the bytes,
// and <name>.json, its meta. Both are written under a temporary name, synced and
// renamed, data first: a meta file names complete, verified data, and anything else
// found at start (temporary files, data without meta, data of the wrong size) is a
// leftover of a crash and is removed.
const (
	dataSuffix = ".data"
	metaSuffix = ".json"
	tmpPrefix  = ".fill-"
)

// Where an entry's expected digest came from.
const (
	digestCatalog = "catalog" // the catalog's SHA-256 of that version
	digestFill    = "fill"    // measured while filling: the catalog did not know the version
)

// meta is an entry's sidecar file.
type meta struct {
	Key          string    `json:"key"`
	ETag         string    `json:"etag"`
	Size         int64     `json:"size"`
	SHA256       string    `json:"sha256"`
	ContentType  string    `json:"content_type"`
	ModTime      time.Time `json:"mod_time"`
	DigestSource string    `json:"digest_source"`
}

// entry is one cached object version.
type entry struct {
	meta
	name string
	elem *list.Element
	// checked: the data's SHA-256 was computed in this process and matched, and
	// fileMod is the data file's modification time then. Only checked entries are
	// served; an entry whose file has another size or time since is discarded.
	checked bool
	fileMod time.Time
	// confirmed is when the origin last answered that this version is its current
	// one (Cache.StatVersion).
	confirmed time.Time
}

func (e *entry) info() objstore.Info {
	return objstore.Info{Key: e.Key, Size: e.Size, ETag: e.ETag, ContentType: e.ContentType, ModTime: e.ModTime}
}

// index is the set of entries in least-recently-used order, and the bytes they and
// the fills in progress take. The Cache's mutex guards it.
type index struct {
	byName   map[string]*entry
	lru      *list.List // of *entry, least recently used at the front
	used     int64      // bytes of the entries
	reserved int64      // bytes set aside for fills in progress
}

func (x *index) init() {
	x.byName = map[string]*entry{}
	x.lru = list.New()
}

func (x *index) len() int { return len(x.byName) }

func (x *index) get(name string) *entry { return x.byName[name] }

func (x *index) add(e *entry) {
	e.elem = x.lru.PushBack(e)
	x.byName[e.name] = e
	x.used += e.Size
}

func (x *index) remove(e *entry) bool {
	if x.byName[e.name] != e {
		return false // already gone
	}
	delete(x.byName, e.name)
	x.lru.Remove(e.elem)
	x.used -= e.Size
	return true
}

func (x *index) touch(e *entry) { x.lru.MoveToBack(e.elem) }

// entryName is the file name of key's version etag: fixed length, whatever the key.
func entryName(key, etag string) string {
	sum := sha256.Sum256([]byte(key + "\x00" + etag))
	return hex.EncodeToString(sum[:20])
}

func (c *Cache) path(name, suffix string) string { return filepath.Join(c.dir, name+suffix) }

// scan rebuilds the index from the directory, removing crash leftovers, and starts
// checking the entries found: none is served before its data was hashed again.
func (c *Cache) scan() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("edge cache: read %s: %w", c.dir, err)
	}
	metas := map[string]bool{}
	for _, de := range des {
		if name, ok := strings.CutSuffix(de.Name(), metaSuffix); ok {
			metas[name] = true
		}
	}
	var found []*entry
	for _, de := range des {
		n := de.Name()
		switch {
		case strings.HasPrefix(n, tmpPrefix):
			c.removeFile(n)
		case strings.HasSuffix(n, dataSuffix) && !metas[strings.TrimSuffix(n, dataSuffix)]:
			c.removeFile(n)
		case strings.HasSuffix(n, metaSuffix):
			name := strings.TrimSuffix(n, metaSuffix)
			e, err := c.readEntry(name)
			if err != nil {
				c.log.Warn("dropping a damaged cache entry", "entry", name, "err", err)
				c.removeEntryFiles(name)
				continue
			}
			found = append(found, e)
		}
	}
	// Oldest first, so that eviction after a restart starts with them.
	slices.SortFunc(found, func(a, b *entry) int { return a.fileMod.Compare(b.fileMod) })
	c.mu.Lock()
	for _, e := range found {
		c.index.add(e)
	}
	evicted := c.evictLocked(0)
	c.mu.Unlock()
	c.removeEvicted(evicted)
	if len(found) > 0 {
		c.log.Info("edge cache entries found; checking them before serving", "entries", len(found))
	}
	c.wg.Go(func() {
		for _, e := range found {
			if c.ctx.Err() != nil {
				return
			}
			c.check(e)
		}
	})
	return nil
}

// readEntry reads an entry's meta and checks its data file has the size it names.
func (c *Cache) readEntry(name string) (*entry, error) {
	b, err := os.ReadFile(c.path(name, metaSuffix))
	if err != nil {
		return nil, err
	}
	e := &entry{name: name}
	if err := json.Unmarshal(b, &e.meta); err != nil {
		return nil, fmt.Errorf("decode meta: %w", err)
	}
	if entryName(e.Key, e.ETag) != name || len(e.SHA256) != 64 {
		return nil, errors.New("meta does not match its file name")
	}
	fi, err := os.Stat(c.path(name, dataSuffix))
	if err != nil {
		return nil, err
	}
	if fi.Size() != e.Size {
		return nil, fmt.Errorf("data has %d bytes, meta says %d", fi.Size(), e.Size)
	}
	e.fileMod = fi.ModTime()
	return e, nil
}

// check hashes an entry found at start and marks it servable, or discards it.
func (c *Cache) check(e *entry) {
	f, err := os.Open(c.path(e.name, dataSuffix))
	if err != nil {
		c.discard(e, "cannot open the cached copy: "+err.Error())
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		c.discard(e, "cannot stat the cached copy: "+err.Error())
		return
	}
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: c.ctx, r: f}); err != nil {
		if c.ctx.Err() == nil {
			c.discard(e, "cannot read the cached copy: "+err.Error())
		}
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != e.SHA256 {
		c.discard(e, "cached copy has SHA-256 "+got+", expected "+e.SHA256)
		return
	}
	c.mu.Lock()
	e.checked, e.fileMod = true, fi.ModTime()
	c.mu.Unlock()
}

// openEntry opens a section of a checked entry, if there is one and its file is
// still the one that was checked.
func (c *Cache) openEntry(name string, offset, length int64) (io.ReadCloser, bool) {
	c.mu.Lock()
	e := c.index.get(name)
	if e == nil || !e.checked {
		c.mu.Unlock()
		return nil, false
	}
	c.index.touch(e)
	size, fileMod := e.Size, e.fileMod
	c.mu.Unlock()
	f, err := os.Open(c.path(name, dataSuffix))
	if err != nil {
		c.discard(e, "cannot open the cached copy: "+err.Error())
		return nil, false
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		c.discard(e, "cannot stat the cached copy: "+err.Error())
	case fi.Size() != size || !fi.ModTime().Equal(fileMod):
		// The cache never writes a file after checking it: someone or something else did.
		c.discard(e, fmt.Sprintf("cached copy changed since it was verified (size %d, was %d; modified %s)", fi.Size(), size, fi.ModTime().UTC().Format(time.RFC3339Nano)))
	default:
		if length < 0 {
			length = size - offset
		}
		if offset < 0 || length < 0 || offset+length > size {
			f.Close()
			return nil, false // not ours to judge: the origin answers with its own error
		}
		if _, err := f.Seek(offset, io.SeekStart); err == nil {
			return &entryReader{file: f, section: io.LimitedReader{R: f, N: length}, length: length, n: &c.stats.bytesFromCache}, true
		}
	}
	f.Close()
	return nil, false
}

// discard drops an entry whose copy cannot be trusted, and says so.
func (c *Cache) discard(e *entry, reason string) {
	c.mu.Lock()
	removed := c.index.remove(e)
	c.mu.Unlock()
	if !removed {
		return
	}
	c.stats.failed.Add(1)
	c.log.Warn("discarded a cached copy that failed verification; serving from the origin", "object", e.Key, "etag", e.ETag, "reason", reason)
	c.removeEntryFiles(e.name)
}

// evictLocked removes least recently used entries until need more bytes fit, and
// returns them for their files to be removed outside the lock. It reports nothing
// when need cannot fit at all.
func (c *Cache) evictLocked(need int64) []*entry {
	var out []*entry
	for c.index.used+c.index.reserved+need > c.capacity {
		front := c.index.lru.Front()
		if front == nil {
			break
		}
		e := front.Value.(*entry)
		c.index.remove(e)
		out = append(out, e)
	}
	return out
}

func (c *Cache) removeEvicted(es []*entry) {
	for _, e := range es {
		c.stats.evictions.Add(1)
		c.log.Debug("evicted a cached copy", "object", e.Key, "etag", e.ETag, "size", e.Size)
		c.removeEntryFiles(e.name)
	}
}

// removeEntryFiles removes meta first: data without meta is a leftover, never an entry.
func (c *Cache) removeEntryFiles(name string) {
	c.removeFile(name + metaSuffix)
	c.removeFile(name + dataSuffix)
}

func (c *Cache) removeFile(n string) {
	if err := os.Remove(filepath.Join(c.dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("cannot remove a cache file", "file", n, "err", err)
	}
}

// entryReader reads one section of an entry's file. Like objstore.LocalReader it
// offers the section as an *io.LimitedReader over the *os.File, which the edge sends
// with sendfile(2).
type entryReader struct {
	file    *os.File
	section io.LimitedReader
	length  int64
	n       interface{ Add(int64) int64 }
}

func (r *entryReader) Read(p []byte) (int, error)         { return r.section.Read(p) }
func (r *entryReader) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, &r.section) }

// Section returns the rest of the section; what is read from it counts as read.
func (r *entryReader) Section() *io.LimitedReader { return &r.section }

// Close closes the file and counts the bytes that were read.
func (r *entryReader) Close() error {
	r.n.Add(r.length - r.section.N)
	return r.file.Close()
}
