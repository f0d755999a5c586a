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
// replaced in the store may be named by new tickets for up to the TTL, as a ticket
// whose object is replaced while it waits names the old one: an edge link then fails
// before the first byte (the edge opens by version); a --direct-downloads link, which
// names only the key, gets the new bytes. Where the catalog knows the object, a
// recorded ETag that differs from the remembered one is asked again, once per TTL
// (statPublished), and an upload through this ingress forgets the key.
type statCache struct {
	objects Objects
	ttl     time.Duration // 0: remember nothing
	now     func() time.Time

	mu     sync.Mutex
	seen   map[string]statSeen
	resets uint64 // counts the times seen started over, forgets and all
	group  singleflight.Group
}

// statSeen is what is remembered of a key: the store's answer (ok), or only that it
// was forgotten (gen counts the forgets, so that a Stat started before one is not
// remembered after it).
type statSeen struct {
	info      objstore.Info
	at        time.Time
	ok        bool
	rechecked bool // asked again because the catalog knew another version
	gen       uint64
}

// maxStats bounds what is remembered: past it the set starts over, which costs one
// Stat per object at most. Only objects that exist are kept, so the bound is reached
// only by a catalog that large.
const maxStats = 4096

// statTimeout bounds a shared Stat, which no single caller's context ends.
const statTimeout = 30 * time.Second

// stat returns the version of key, and whether it is a remembered answer that no
// recheck confirmed (so the catalog's knowing another version may be news to it).
func (c *statCache) stat(ctx context.Context, key string) (info objstore.Info, remembered bool, err error) {
	if c.ttl <= 0 {
		info, err = c.objects.Stat(ctx, key)
		return info, false, err
	}
	c.mu.Lock()
	s := c.seen[key]
	c.mu.Unlock()
	if s.ok && c.now().Sub(s.at) < c.ttl {
		return s.info, !s.rechecked, nil
	}
	info, err = c.fresh(ctx, key, false)
	return info, false, err
}

// recheck forgets what is remembered of key and asks the store again; its answer is
// remembered as a rechecked one, so a real difference from the catalog costs one
// recheck per TTL, not one per request.
func (c *statCache) recheck(ctx context.Context, key string) (objstore.Info, error) {
	c.forget(key)
	return c.fresh(ctx, key, true)
}

// fresh asks the store, sharing the question with concurrent callers for the same key,
// and remembers a successful answer.
func (c *statCache) fresh(ctx context.Context, key string, rechecked bool) (objstore.Info, error) {
	if c.ttl <= 0 {
		return c.objects.Stat(ctx, key)
	}
	ch := c.group.DoChan(key, func() (any, error) {
		// The shared Stat runs for whoever waits on it, not for the first caller alone.
		c.mu.Lock()
		gen, resets := c.seen[key].gen, c.resets
		c.mu.Unlock()
		at := c.now()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statTimeout)
		defer cancel()
		info, err := c.objects.Stat(sctx, key)
		if err == nil {
			c.remember(key, statSeen{info: info, at: at, ok: true, rechecked: rechecked, gen: gen}, resets)
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

// remember keeps s, asked when the set had started over resets times.
func (c *statCache) remember(key string, s statSeen, resets uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[key].gen != s.gen || c.resets != resets {
		return // a forget came while it was asked: the answer may predate it
	}
	if c.seen == nil || len(c.seen) >= maxStats {
		c.seen = make(map[string]statSeen)
		c.resets++
		s.gen = 0
	}
	c.seen[key] = s
}

// forget drops what is remembered of key (it was just replaced through this ingress),
// and any Stat of it in flight.
func (c *statCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[string]statSeen)
	}
	c.seen[key] = statSeen{gen: c.seen[key].gen + 1}
	c.group.Forget(key)
}
