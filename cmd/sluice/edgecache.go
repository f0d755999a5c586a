package main

import (
	"context"
	"errors"
	"time"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/edgecache"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/workers"
)

// edgeStore is what the edge reads objects from: the store, behind the disk cache
// when --edge-cache-dir is set. Copies are checked against the catalog where this
// process has one (serve); an edge role has none, and keeps the SHA-256 measured
// while filling (see docs/ARCHITECTURE.md, Edge cache).
func edgeStore(d *deps, c *serverConfig, rel *releases, o *ops) (objstore.Store, error) {
	if c.EdgeCacheDir == "" {
		return d.store, nil
	}
	var digests edgecache.Digests
	if rel != nil {
		digests = catalogDigests{rel.catalog}
	}
	cache, err := edgecache.New(edgecache.Config{Dir: c.EdgeCacheDir, Size: c.EdgeCacheSize,
		Origin: d.store, Digests: digests, Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.onClose(func() { _ = cache.Close() })
	o.metrics.Registry.MustRegister(telemetry.NewEdgeCacheCollector(func() telemetry.EdgeCacheStats {
		s := cache.Stats()
		return telemetry.EdgeCacheStats{Hits: s.Hits, Misses: s.Misses, StaleHits: s.StaleHits,
			BytesFromCache: s.BytesFromCache, BytesFromOrigin: s.BytesFromOrigin, Evictions: s.Evictions,
			VerificationFailures: s.VerificationFailure, FillErrors: s.FillErrors,
			UsedBytes: s.UsedBytes, CapacityBytes: s.CapacityBytes}
	}))
	d.log.Info("edge cache on local disk", "dir", c.EdgeCacheDir, "size", c.EdgeCacheSize, "verified_against_catalog", digests != nil)
	return cache, nil
}

// catalogDigests gives the edge cache the catalog's SHA-256 of verified versions.
type catalogDigests struct{ cat *catalog.Catalog }

func (g catalogDigests) SHA256(ctx context.Context, key, etag string) (string, error) {
	e, err := g.cat.Lookup(ctx, key)
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
