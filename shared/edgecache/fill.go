package edgecache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

const (
	fillChunk = 256 << 10
	// diskPause is how long fills stop after the disk refused one.
	diskPause = 30 * time.Second
	// rejectPause is how long a version whose copy failed verification is not filled
	// again: the origin would most likely send the same bytes.
	rejectPause = 10 * time.Minute
	// feedBuffer bounds the bytes a first reader's stream holds for the fill that
	// writes them to disk; past it the disk is behind, and the fill reads the rest
	// from the origin itself (see teeReader).
	feedBuffer = 8 << 20
	// A feed slower than feedMinRate after feedGrace (a slow or throttled client) is
	// left too: the fill must not go at one client's pace.
	feedGrace   = 2 * time.Second
	feedMinRate = 32 << 20
)

// fill is one copy of an object version from the origin into a temporary file in
// progress. Readers of the same version that start at or before what it has written
// follow it, reading the temporary file as it grows: however many clients ask at
// once, the origin is read once.
type fill struct {
	key, etag, name string
	tmp             string // path of the temporary file
	size            int64

	mu sync.Mutex
	// reader reads the temporary file for all followers (ReadAt is safe for
	// concurrent use); refs counts the fill itself and each follower, and the last
	// to let go closes it. Held this way, it outlives the file's rename or removal.
	reader   *os.File
	refs     int
	written  int64
	done     bool
	err      error         // why it stopped early; nil once every byte was written
	progress chan struct{} // closed and replaced whenever written grows or done is set

	// feed, when the reader that started the fill streams from the origin itself
	// (teeReader), carries copies of its bytes from offset 0; the tee closes it when it
	// stops feeding. left is closed when the fill stops taking them.
	feed chan *[]byte
	left chan struct{}
	// readerDone is closed when the feeding reader is closed; followed when the
	// first follower arrives (see copyFill).
	readerDone, followed chan struct{}
	hasFollower          bool
}

// state returns how far the fill is and a channel closed at its next change.
func (f *fill) state() (written int64, done bool, err error, next <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.done, f.err, f.progress
}

// acquire returns the shared reader for a follower of [start, end), or false when the
// section must come from the origin: the fill has not reached start, or has failed.
func (f *fill) acquire(start, end int64) (*os.File, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == 0 || start > f.written || end > f.size || (f.done && f.err != nil) {
		return nil, false
	}
	f.refs++
	if f.followed != nil && !f.hasFollower {
		f.hasFollower = true
		close(f.followed)
	}
	return f.reader, true
}

// release lets go of the shared reader.
func (f *fill) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs--; f.refs == 0 {
		_ = f.reader.Close()
	}
}

func (f *fill) advance(n int64, finished bool, err error) {
	f.mu.Lock()
	f.written += n
	if finished {
		f.done, f.err = true, err
	}
	close(f.progress)
	f.progress = make(chan struct{})
	f.mu.Unlock()
}

// follow returns a reader of the section that follows the fill of the version,
// starting the fill if none runs; false when the section must come from the origin
// (no fill possible, or one that has not reached offset yet). A reader from offset 0
// that starts the fill does not follow it: it reads the origin, and the fill writes
// a copy of its bytes behind it (teeReader), so that the first download is not held
// to the disk's pace.
func (c *Cache) follow(ctx context.Context, name, key string, offset, length int64, etag string) (io.ReadCloser, bool) {
	if length < 0 {
		return nil, false
	}
	c.mu.Lock()
	f := c.fills[name]
	c.mu.Unlock()
	if f == nil {
		var started bool
		if f, started = c.startFill(ctx, name, key, etag, offset == 0); f == nil {
			return nil, false
		}
		if started && f.feed != nil {
			rd, err := c.fromOrigin(ctx, key, 0, length, etag)
			if err != nil {
				close(f.feed) // the fill reads the origin itself
				close(f.readerDone)
				return nil, false
			}
			return &teeReader{c: c, ctx: ctx, f: f, key: key, etag: etag, rd: rd, end: length, feeding: true}, true
		}
	}
	file, ok := f.acquire(offset, offset+length)
	if !ok {
		return nil, false
	}
	return &followReader{c: c, ctx: ctx, f: f, file: file, pos: offset, end: offset + length}, true
}

// startFill starts filling key at etag unless one already runs, and returns the
// running fill and whether this call started it; nil when the version is not to be
// cached now. With fed, a fill it starts takes its first bytes from a feed.
func (c *Cache) startFill(ctx context.Context, name, key, etag string, fed bool) (*fill, bool) {
	c.mu.Lock()
	paused := time.Now().Before(c.pausedUntil)
	c.mu.Unlock()
	if paused {
		return nil, false
	}
	info, err := c.origin.Stat(ctx, key)
	if err != nil || info.ETag != etag || info.Size <= 0 || info.Size > c.capacity {
		return nil, false
	}
	want := ""
	if c.digests != nil {
		if want, err = c.digests.SHA256(ctx, key, etag); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, ErrNoCatalog) {
				level = slog.LevelDebug // said once by whoever knows why
			}
			c.log.Log(ctx, level, "cannot learn the expected SHA-256; not caching this time", "object", key, "etag", etag, "err", err)
			return nil, false
		}
	}
	if want == "" && c.requireDigest {
		return nil, false // nothing to verify a copy against
	}

	c.mu.Lock()
	if f := c.fills[name]; f != nil {
		c.mu.Unlock()
		return f, false
	}
	if e := c.index.get(name); e != nil {
		c.mu.Unlock()
		return nil, false // verified meanwhile, or being checked after a restart
	}
	if until, ok := c.rejected[name]; ok && time.Now().Before(until) {
		c.mu.Unlock()
		return nil, false // its last copy did not verify: not again so soon
	}
	delete(c.rejected, name)
	evicted := c.evictLocked(info.Size)
	if c.index.used+c.index.reserved+info.Size > c.capacity {
		c.mu.Unlock()
		c.removeEvicted(evicted)
		return nil, false
	}
	tmp := c.path(tmpPrefix+name+"-"+rand.Text(), "")
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		c.pausedUntil = time.Now().Add(diskPause)
		c.mu.Unlock()
		c.removeEvicted(evicted)
		c.stats.fillErrors.Add(1)
		c.log.Warn("cannot write to the edge cache; serving from the origin", "dir", c.dir, "err", err, "retry_in", diskPause)
		return nil, false
	}
	reader, err := os.Open(tmp)
	if err != nil {
		c.mu.Unlock()
		_ = file.Close()
		_ = os.Remove(tmp)
		c.removeEvicted(evicted)
		return nil, false
	}
	c.index.reserved += info.Size
	f := &fill{key: key, etag: etag, name: name, tmp: tmp, size: info.Size, reader: reader, refs: 1, progress: make(chan struct{})}
	if fed {
		f.feed, f.left = make(chan *[]byte, feedBuffer/fillChunk), make(chan struct{})
		f.readerDone, f.followed = make(chan struct{}), make(chan struct{})
	}
	c.fills[name] = f
	c.mu.Unlock()
	c.removeEvicted(evicted)
	c.wg.Go(func() { c.runFill(f, info, want, file) })
	return f, true
}

// runFill copies the version into f's file, then verifies and publishes it as an
// entry, or removes it.
func (c *Cache) runFill(f *fill, info objstore.Info, want string, file *os.File) {
	ctx, cancel := context.WithTimeout(c.ctx, c.fillTimeout)
	defer cancel()
	err := c.copyFill(ctx, f, file)
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	f.advance(0, true, err)
	// Hashed after the copy, from the page cache, rather than during it: SHA-256 is
	// slower than the store here (about 0.3 GB/s on one of these cores), and the
	// followers must not wait for it.
	var e *entry
	if err == nil {
		var sum string
		if sum, err = hashFile(ctx, f.reader, f.size); err == nil {
			e, err = c.publish(f, info, want, sum)
		}
	}
	c.mu.Lock()
	delete(c.fills, f.name)
	c.index.reserved -= f.size
	if e != nil {
		c.index.add(e)
	}
	if isDiskFull(err) {
		c.pausedUntil = time.Now().Add(diskPause)
	}
	if errors.Is(err, errVerification) {
		now := time.Now()
		for name, until := range c.rejected {
			if now.After(until) {
				delete(c.rejected, name) // bounded by the versions rejected in rejectPause
			}
		}
		c.rejected[f.name] = now.Add(rejectPause)
	}
	c.mu.Unlock()
	f.release() // after the entry is in: a reader finds one or the other
	if e != nil {
		c.stats.fills.Add(1)
		c.log.Debug("cached a verified copy", "object", f.key, "etag", f.etag, "size", f.size, "digest", e.DigestSource)
		return
	}
	if err := os.Remove(f.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("cannot remove a cache file", "file", f.tmp, "err", err)
	}
	if errors.Is(err, errVerification) {
		c.stats.failed.Add(1)
		c.log.Warn("discarded a filled copy that failed verification", "object", f.key, "etag", f.etag, "err", err)
	} else if c.ctx.Err() == nil {
		c.stats.fillErrors.Add(1)
		c.log.Warn("edge cache fill failed; serving from the origin", "object", f.key, "etag", f.etag, "err", err)
	}
}

// errVerification marks a copy whose bytes are not the version's.
var errVerification = errors.New("copy does not match the expected SHA-256")

// copyFill writes the whole version into file: first what its feed brings, if it
// has one, then the rest from the origin. A feed that ended early because its reader
// went faster than the disk is continued once that reader is done, not beside it
// (a second stream from the store would slow the first), or at once when another
// reader follows the fill and waits for its bytes.
func (c *Cache) copyFill(ctx context.Context, f *fill, file *os.File) error {
	if f.feed != nil {
		at, slow, err := c.takeFeed(ctx, f, file)
		if err != nil || at == f.size {
			return err
		}
		if !slow {
			select {
			case <-f.readerDone:
			case <-f.followed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return c.copyFrom(ctx, f, file, at)
	}
	return c.copyFrom(ctx, f, file, 0)
}

// copyFrom copies the version from byte at on, from the origin, into file.
func (c *Cache) copyFrom(ctx context.Context, f *fill, file *os.File, at int64) error {
	rd, err := c.origin.Open(ctx, f.key, at, f.size-at, f.etag)
	if err != nil {
		return fmt.Errorf("open at the origin: %w", err)
	}
	defer rd.Close()
	buf := make([]byte, fillChunk)
	for left := f.size - at; left > 0; {
		n, err := io.ReadFull(rd, buf[:min(int64(len(buf)), left)])
		c.stats.bytesFromOrigin.Add(int64(n))
		if err != nil {
			return fmt.Errorf("read from the origin: %w", err)
		}
		if _, err := file.Write(buf[:n]); err != nil {
			return fmt.Errorf("write the copy: %w", err)
		}
		left -= int64(n)
		f.advance(int64(n), false, nil)
	}
	return nil
}

// takeFeed writes what f's feed brings into file until the feed ends (the reader
// stopped feeding: done, gone, or ahead of the disk by feedBuffer) or is too slow,
// and returns how many bytes it wrote and whether it left a slow feed.
func (c *Cache) takeFeed(ctx context.Context, f *fill, file *os.File) (at int64, slow bool, err error) {
	defer close(f.left)
	start := time.Now()
	check := time.NewTicker(feedGrace / 4)
	defer check.Stop()
	for at < f.size {
		select {
		case b, ok := <-f.feed:
			if !ok {
				return at, false, nil
			}
			if c.feedWriteHook != nil {
				c.feedWriteHook()
			}
			n, err := file.Write(*b)
			feedChunks.Put(b)
			if err != nil {
				return at, false, fmt.Errorf("write the copy: %w", err)
			}
			at += int64(n)
			f.advance(int64(n), false, nil)
		case <-check.C:
			if el := time.Since(start); el > feedGrace && float64(at)/el.Seconds() < feedMinRate {
				return at, true, nil // a slow reader: the origin is faster
			}
		case <-ctx.Done():
			return at, false, ctx.Err()
		}
	}
	return at, false, nil
}

// feedChunks are the buffers a teeReader hands to its fill.
var feedChunks = sync.Pool{New: func() any { b := make([]byte, 0, fillChunk); return &b }}

// teeReader is the reader that started a fill: it streams its section (from offset
// 0) from the origin and hands a copy of each byte to the fill, which writes it to
// disk behind it. The hand-over never waits: should the fill be feedBuffer behind
// (the disk is slower than the origin) or have stopped taking the feed, the reader
// stops feeding and the fill reads the rest from the origin itself. The reader is
// therefore never slowed by the cache disk, and the origin is read once as long as
// the disk keeps up. A cut origin stream is opened again once at the byte reached,
// as a follower of a failed fill would be.
type teeReader struct {
	c         *Cache
	ctx       context.Context
	f         *fill
	key, etag string
	rd        io.ReadCloser
	pos, end  int64
	feeding   bool
	cur       *[]byte // bytes not yet handed over, up to fillChunk
	reopened  bool
	closed    bool
}

func (t *teeReader) Read(p []byte) (int, error) {
	if t.pos >= t.end {
		return 0, io.EOF
	}
	n, err := t.rd.Read(p[:min(int64(len(p)), t.end-t.pos)])
	if t.feeding && n > 0 {
		t.hand(p[:n])
	}
	t.pos += int64(n)
	switch {
	case err == io.EOF && t.pos >= t.end:
		t.stopFeeding()
	case err != nil: // cut short
		t.stopFeeding()
		if t.reopened || t.ctx.Err() != nil {
			return n, err
		}
		t.reopened = true
		_ = t.rd.Close()
		rd, oerr := t.c.fromOrigin(t.ctx, t.key, t.pos, t.end-t.pos, t.etag)
		if oerr != nil {
			return n, fmt.Errorf("read from the origin (%w), and again: %w", err, oerr)
		}
		t.rd = rd
		if n > 0 {
			return n, nil
		}
		return t.Read(p)
	}
	return n, nil
}

// hand copies b into the feed, a chunk at a time, without waiting.
func (t *teeReader) hand(b []byte) {
	for len(b) > 0 && t.feeding {
		if t.cur == nil {
			t.cur = feedChunks.Get().(*[]byte)
			*t.cur = (*t.cur)[:0]
		}
		k := min(len(b), fillChunk-len(*t.cur))
		*t.cur = append(*t.cur, b[:k]...)
		b = b[k:]
		if len(*t.cur) == fillChunk {
			t.send()
		}
	}
}

// send hands the current chunk over; the feed ends if the fill cannot take it now.
func (t *teeReader) send() {
	select {
	case <-t.f.left:
		t.feeding = false
		return
	default:
	}
	select {
	case t.f.feed <- t.cur:
		t.cur = nil
	default:
		t.feeding = false // the disk is behind: the fill goes on from the origin
		close(t.f.feed)
	}
}

// stopFeeding hands over what is left and ends the feed.
func (t *teeReader) stopFeeding() {
	if !t.feeding {
		return
	}
	if t.cur != nil && len(*t.cur) > 0 {
		t.send()
	}
	if t.feeding {
		t.feeding = false
		close(t.f.feed)
	}
}

func (t *teeReader) Close() error {
	t.stopFeeding()
	if !t.closed {
		t.closed = true
		close(t.f.readerDone)
	}
	return t.rd.Close()
}

// hashFile returns the hex SHA-256 of the first size bytes of f.
func hashFile(ctx context.Context, f *os.File, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, &ctxReader{ctx: ctx, r: io.NewSectionReader(f, 0, size)}, make([]byte, fillChunk)); err != nil {
		return "", fmt.Errorf("hash the copy: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// publish checks the filled copy and renames it into place with its meta.
func (c *Cache) publish(f *fill, info objstore.Info, want, sum string) (*entry, error) {
	source := digestCatalog
	if want == "" {
		want, source = sum, digestFill
	}
	if sum != want {
		return nil, fmt.Errorf("%w: measured %s, catalog has %s", errVerification, sum, want)
	}
	e := &entry{name: f.name, checked: true, meta: meta{Key: f.key, ETag: f.etag, Size: f.size, SHA256: sum,
		ContentType: info.ContentType, ModTime: info.ModTime, DigestSource: source}}
	data := c.path(f.name, dataSuffix)
	if err := os.Rename(f.tmp, data); err != nil {
		return nil, fmt.Errorf("rename the copy: %w", err)
	}
	b, _ := json.Marshal(e.meta)
	if err := c.writeSynced(c.path(f.name, metaSuffix), b); err != nil {
		c.removeFile(f.name + dataSuffix)
		return nil, err
	}
	fi, err := os.Stat(data)
	if err != nil {
		c.removeEntryFiles(f.name)
		return nil, err
	}
	e.fileMod = fi.ModTime()
	return e, nil
}

// writeSynced writes b to path through a synced temporary file and a rename, then
// syncs the directory so that both renames are durable.
func (c *Cache) writeSynced(path string, b []byte) error {
	tmp := c.path(tmpPrefix+"meta-"+rand.Text(), "")
	err := os.WriteFile(tmp, b, 0o644)
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncFile(c.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write entry meta: %w", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// followReader reads a section from a fill's temporary file as the fill writes it
// (file is the fill's shared reader).
// Should the fill stop early, the rest of the section comes from the origin.
type followReader struct {
	c        *Cache
	ctx      context.Context
	f        *fill
	file     *os.File
	pos, end int64
	origin   io.ReadCloser // once the fill has failed
}

func (r *followReader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if r.origin != nil {
		n, err := r.origin.Read(p)
		r.pos += int64(n)
		return n, err
	}
	for {
		written, done, ferr, next := r.f.state()
		if r.pos < written {
			n, err := r.file.ReadAt(p[:min(int64(len(p)), written-r.pos, r.end-r.pos)], r.pos)
			r.pos += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if done {
			if ferr == nil {
				return 0, io.ErrUnexpectedEOF // the fill wrote the whole version: cannot happen
			}
			rd, err := r.c.fromOrigin(r.ctx, r.f.key, r.pos, r.end-r.pos, r.f.etag)
			if err != nil {
				return 0, fmt.Errorf("cache fill failed (%w), and so did the origin: %w", ferr, err)
			}
			r.origin = rd
			return r.Read(p)
		}
		select {
		case <-next:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *followReader) Close() error {
	r.f.release()
	if r.origin != nil {
		return r.origin.Close()
	}
	return nil
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
