package ingress

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// statCache remembers, for Config.StatCache, the version of each object the store
// last reported, so that a burst of tickets for one release costs one Stat (a HEAD at
// S3) instead of one per ticket; concurrent misses for the same object share one Stat.
// nginx's open_file_cache does the same for its files.
//
// Only successful answers are kept: a missing object or a failure is asked again on
// the next request, so an object uploaded a moment ago is found at once. A version
// replaced in the store may be named by new tickets for up to the TTL; their links
// then fail at the edge before the first byte (the edge opens by version), as for a
// ticket whose object is replaced while it waits. Where the catalog knows the object,
// a recorded ETag that differs from the remembered one is asked again (statPublished),
// and an upload through this ingress forgets the key.
type statCache struct {
	objects Objects
	ttl     time.Duration // 0: remember nothing
	now     func() time.Time

	mu    sync.Mutex
	seen  map[string]statSeen
	gen   uint64 // counts forgets: a Stat started before one is not remembered
	group singleflight.Group
}

type statSeen struct {
	info objstore.Info
	at   time.Time
}

// maxStats bounds what is remembered: past it the set starts over, which costs one
// Stat per object at most. Only objects that exist are kept, so the bound is reached
// only by a catalog that large.
const maxStats = 4096

// statTimeout bounds a shared Stat, which no single caller's context ends.
const statTimeout = 30 * time.Second

// stat returns the version of key, remembered or asked.
func (c *statCache) stat(ctx context.Context, key string) (objstore.Info, error) {
	if c.ttl <= 0 {
		return c.objects.Stat(ctx, key)
	}
	c.mu.Lock()
	s, ok := c.seen[key]
	c.mu.Unlock()
	if ok && c.now().Sub(s.at) < c.ttl {
		return s.info, nil
	}
	return c.fresh(ctx, key)
}

// fresh asks the store, sharing the question with concurrent callers for the same key,
// and remembers a successful answer.
func (c *statCache) fresh(ctx context.Context, key string) (objstore.Info, error) {
	if c.ttl <= 0 {
		return c.objects.Stat(ctx, key)
	}
	ch := c.group.DoChan(key, func() (any, error) {
		// The shared Stat runs for whoever waits on it, not for the first caller alone.
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		at := c.now()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statTimeout)
		defer cancel()
		info, err := c.objects.Stat(sctx, key)
		if err == nil {
			c.remember(key, info, at, gen)
		}
		return info, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return objstore.Info{}, r.Err
		}
		return r.Val.(objstore.Info), nil
	case <-ctx.Done():
		return objstore.Info{}, ctx.Err()
	}
}

func (c *statCache) remember(key string, info objstore.Info, at time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // a forget came while it was asked: the answer may predate it
	}
	if c.seen == nil || len(c.seen) >= maxStats {
		c.seen = make(map[string]statSeen)
	}
	c.seen[key] = statSeen{info: info, at: at}
}

// forget drops what is remembered of key (it was just replaced through this
// ingress, or the catalog knows another version), and any Stat of it in flight.
func (c *statCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, key)
	c.gen++
	c.group.Forget(key)
}
