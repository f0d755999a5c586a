package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/edgecache"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/workers"
)

// edgeStore is what the edge reads objects from: the store, behind the disk cache
// when --edge-cache-dir is set. Copies are checked against the release catalog: the
// process's own (serve), or for an edge role given --nats-url the catalog's entries,
// returned for the edge to run (edgeEntries). An edge without NATS keeps the SHA-256
// measured while filling (see docs/ARCHITECTURE.md, Edge cache). The cache is returned
// a second time as what the edge closes after its last stream.
func edgeStore(d *deps, c *serverConfig, rel *releases, o *ops) (_ objstore.Store, _ io.Closer, entries *edgeEntries, _ error) {
	if c.EdgeCacheDir == "" {
		return d.store, nil, nil, nil
	}
	var digests edgecache.Digests
	switch {
	case rel != nil:
		digests = catalogDigests{rel.catalog}
	case d.js != nil:
		entries = &edgeEntries{js: d.js, log: d.log}
		digests = entries
	default:
		d.log.Warn("the edge cache checks copies against the digest measured while filling, not the release catalog's; set --nats-url (SLUICE_NATS_URL) to check them against the catalog")
	}
	cache, err := edgecache.New(edgecache.Config{Dir: c.EdgeCacheDir, Size: c.EdgeCacheSize,
		Origin: d.store, Digests: digests, Logger: d.log, Revalidate: cacheRevalidate(c.EdgeRevalidate)})
	if err != nil {
		return nil, nil, nil, err
	}
	o.metrics.Registry.MustRegister(telemetry.NewEdgeCacheCollector(func() telemetry.EdgeCacheStats {
		s := cache.Stats()
		return telemetry.EdgeCacheStats{Hits: s.Hits, Misses: s.Misses, StaleHits: s.StaleHits,
			BytesFromCache: s.BytesFromCache, BytesFromOrigin: s.BytesFromOrigin, Evictions: s.Evictions,
			VerificationFailures: s.VerificationFailure, FillErrors: s.FillErrors,
			UsedBytes: s.UsedBytes, CapacityBytes: s.CapacityBytes}
	}))
	d.log.Info("edge cache on local disk", "dir", c.EdgeCacheDir, "size", c.EdgeCacheSize, "verified_against_catalog", digests != nil)
	return cache, cache, entries, nil
}

// edgeEntries is an edge role's view of the release catalog: the entries bucket that
// another role creates (sluice init, a worker, an ingress), bound once it exists and
// then followed in memory. Until then nothing is cached (SHA256 fails), so an edge
// may start before the rest of the system without ever keeping an unchecked copy.
type edgeEntries struct {
	js  jetstream.JetStream
	log *slog.Logger
	cat atomic.Pointer[catalog.Catalog]
}

func (e *edgeEntries) SHA256(ctx context.Context, key, etag string) (string, error) {
	cat := e.cat.Load()
	if cat == nil {
		return "", fmt.Errorf("%w: the bucket %s is not there yet", edgecache.ErrNoCatalog, catalog.EntryBucket)
	}
	return catalogDigests{cat}.SHA256(ctx, key, etag)
}

// run binds the bucket, retrying until it exists, then keeps the copy current until
// ctx ends.
func (e *edgeEntries) run(ctx context.Context) error {
	first, cancel := context.WithTimeout(ctx, 2*time.Second)
	cat, err := catalog.OpenEntries(first, e.js)
	cancel()
	if err != nil && ctx.Err() == nil {
		e.log.Warn("the release catalog's bucket is not there yet: the edge cache keeps no copies until it is (run sluice init, or start a worker)",
			"bucket", catalog.EntryBucket, "err", err)
		cat, err = catalog.OpenEntries(ctx, e.js)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	e.cat.Store(cat)
	e.log.Info("the edge cache checks copies against the release catalog", "bucket", catalog.EntryBucket)
	return cat.Follow(ctx, e.log)
}

// cacheRevalidate is --edge-revalidate for the edge cache, whose 0 means its default.
func cacheRevalidate(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// catalogDigests gives the edge cache the catalog's SHA-256 of verified versions.
type catalogDigests struct{ cat *catalog.Catalog }

func (g catalogDigests) SHA256(ctx context.Context, key, etag string) (string, error) {
	e, err := g.cat.Recorded(ctx, key) // verified versions are records: no Redis read
	if errors.Is(err, catalog.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if e.State != catalog.StateVerified || e.ETag != etag {
		return "", nil // not that version, or not verified: nothing to check against
	}
	return e.SHA256, nil
}

// cacheBytes is the capacity an edge advertises as its weight in edge choice.
func cacheBytes(c *serverConfig) int64 {
	if c.EdgeCacheDir == "" {
		return 0
	}
	return c.EdgeCacheSize
}

// edgeChooser is the workers' choice of edge per object, when asked for.
func (o *ops) edgeChooser(on bool) workers.EdgeChooser {
	if !on {
		return nil
	}
	return fleet.NewEdgeChooser(o.fleet, time.Second, o.log)
}
