package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The catalog's entries are read on every download request (is the object rejected?
// is it verified?), and they change rarely: a process that calls Follow keeps a copy
// of them in memory, fed by a watch of EntryBucket, and answers those reads without a
// round trip. The copy is derived state like everything outside the buckets: it is
// used only once the watch has delivered every current entry, and read past (the
// bucket is asked) from the moment the watch fails until a new one has caught up
// again. A change reaches the copy within the watch's delivery delay (milliseconds):
// one process reads its own copy in order, so what GET /api/v1/objects shows is what
// its downloads are checked against.

// followRetry is the pause between watches when one fails.
const followRetry = time.Second

// entryCache is the copy. synced is false until a watch has delivered every entry.
type entryCache struct {
	mu      sync.RWMutex
	synced  bool
	entries map[string]cachedEntry // by object key
}

type cachedEntry struct {
	rec record
	rev uint64
}

// get answers from the copy: the entry, whether it exists, and whether the copy could
// answer at all (false: not synced, read the bucket).
func (ec *entryCache) get(object string) (cachedEntry, bool, bool) {
	ec.mu.RLock()
	defer ec.mu.RUnlock()
	if !ec.synced {
		return cachedEntry{}, false, false
	}
	e, found := ec.entries[object]
	return e, found, true
}

func (ec *entryCache) replace(entries map[string]cachedEntry) {
	ec.mu.Lock()
	ec.entries, ec.synced = entries, true
	ec.mu.Unlock()
}

func (ec *entryCache) apply(object string, e cachedEntry, deleted bool) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if deleted {
		delete(ec.entries, object)
		return
	}
	if prev, ok := ec.entries[object]; !ok || prev.rev < e.rev {
		ec.entries[object] = e
	}
}

func (ec *entryCache) unsync() {
	ec.mu.Lock()
	ec.synced, ec.entries = false, nil
	ec.mu.Unlock()
}

// Follow keeps this process's copy of the catalog's entries current until ctx ends,
// watching EntryBucket again (after followRetry) whenever a watch fails; while there is
// no complete copy, reads go to the bucket. It says once when the copy is lost and once
// when it is back, and returns nil when ctx ends.
func (c *Catalog) Follow(ctx context.Context, log *slog.Logger) error {
	lost := false
	for {
		err := c.follow(ctx, func() {
			if lost {
				log.Info("the copy of the release catalog is back; downloads are checked against it again")
				lost = false
			}
		})
		c.cache.unsync()
		if ctx.Err() != nil {
			return nil
		}
		if !lost {
			log.Warn("the watch of the release catalog stopped; downloads read the catalog from JetStream until it is back", "err", err)
			lost = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followRetry):
		}
	}
}

// follow runs one watch: every current entry into a new copy, made the copy once
// complete (then synced is called), then every change into it.
func (c *Catalog) follow(ctx context.Context, synced func()) error {
	w, err := c.entries.WatchAll(ctx)
	if err != nil {
		return natsDown("watch the catalog entries", err)
	}
	defer w.Stop()
	initial := map[string]cachedEntry{}
	for {
		var kve jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return natsDown("watch the catalog entries", errors.New("the watch ended"))
			}
			kve = e
		}
		if kve == nil { // every current entry has been delivered
			c.cache.replace(initial)
			initial = nil
			synced()
			continue
		}
		object, deleted, e, err := decodeWatched(kve)
		if err != nil {
			return err
		}
		if initial != nil {
			if deleted {
				delete(initial, object)
			} else {
				initial[object] = e
			}
			continue
		}
		c.cache.apply(object, e, deleted)
	}
}

// decodeWatched reads one watched entry; a deleted or purged key names its object
// by the key alone.
func decodeWatched(kve jetstream.KeyValueEntry) (object string, deleted bool, e cachedEntry, err error) {
	if op := kve.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		object, err = objectOfKey(kve.Key())
		return object, true, cachedEntry{}, err
	}
	var r record
	if err := json.Unmarshal(kve.Value(), &r); err != nil {
		return "", false, cachedEntry{}, fmt.Errorf("decode catalog entry %s (revision %d): %w", kve.Key(), kve.Revision(), err)
	}
	return r.Object, false, cachedEntry{rec: r, rev: kve.Revision()}, nil
}

// recorded returns the record of an object and its revision: from the copy when it is
// complete, else from the bucket.
func (c *Catalog) recorded(ctx context.Context, object string) (record, uint64, bool, error) {
	if e, found, ok := c.cache.get(object); ok {
		return e.rec, e.rev, found, nil
	}
	return c.readEntry(ctx, object)
}
