package catalog

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Derived state in Redis, under the prefix (all of it may be lost at any moment):
//
//	ch:<channel>       zset    verified objects of a channel -> published_us (aliases.go)
//	a:<object>         hash    the entry revision applied to the channel sets, and the set the object is in
//	gen, rebuild       string  the alias rebuild's marker and claim (aliases.go)
//	obj:<key>          hash    a pending entry: accepted, no result yet (kept PendingTTL)
//	ver:<etag>:<key>   hash    a measured size and SHA-256 per object version (kept VerifyTTL)
//	…:lock             string  the claim to hash that version
//	stats              hash    counters

var (
	//go:embed lua/alias.lua
	aliasLua string
	//go:embed lua/heal.lua
	healLua string
	//go:embed lua/rebuilt.lua
	rebuiltLua string
	//go:embed lua/pending.lua
	pendingLua string
	//go:embed lua/deadlettered.lua
	deadLetteredLua string

	aliasScript        = redis.NewScript(aliasLua)
	healScript         = redis.NewScript(healLua)
	rebuiltScript      = redis.NewScript(rebuiltLua)
	pendingScript      = redis.NewScript(pendingLua)
	deadLetteredScript = redis.NewScript(deadLetteredLua)
)

// Scripts names the catalog's Lua scripts, so that the Redis metrics
// (telemetry.Metrics.RedisHook) record which one ran instead of evalsha.
func Scripts() map[string]*redis.Script {
	return map[string]*redis.Script{
		"catalog.alias": aliasScript, "catalog.heal": healScript, "catalog.rebuilt": rebuiltScript,
		"catalog.pending": pendingScript, "catalog.dead_lettered": deadLetteredScript,
	}
}

func aliasArgs(rev uint64, r record) []any {
	return []any{r.Object, rev, r.State, r.Channel, r.PublishedUS}
}

// applyDerived brings Redis in line with an entry just stored (or found) at rev: the
// channel sets follow it, and the object's pending entry is gone, its result known.
func (c *Catalog) applyDerived(ctx context.Context, rev uint64, r record) error {
	pipe := c.rdb.Pipeline()
	// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT, and the script is small.
	aliasScript.Eval(ctx, pipe, []string{c.cfg.Prefix}, aliasArgs(rev, r)...)
	pipe.Del(ctx, c.cfg.Prefix+"obj:"+r.Object)
	if _, err := pipe.Exec(ctx); err != nil {
		return redisDown(fmt.Sprintf("update the channel aliases of %q", r.Object), err)
	}
	return nil
}

// countRecorded counts a recorded event. Counters are for operators; the event is
// recorded whether or not Redis takes the count.
func (c *Catalog) countRecorded(ctx context.Context, outcome string) {
	pipe := c.rdb.TxPipeline()
	pipe.HIncrBy(ctx, c.cfg.Prefix+"stats", "recorded", 1)
	pipe.HIncrBy(ctx, c.cfg.Prefix+"stats", outcome, 1)
	_, _ = pipe.Exec(ctx)
}

func (c *Catalog) countDuplicate(ctx context.Context) {
	_ = c.rdb.HIncrBy(ctx, c.cfg.Prefix+"stats", "duplicate_deliveries", 1).Err()
}

// NoteDuplicate counts a delivery of an event that had been processed before.
func (c *Catalog) NoteDuplicate(ctx context.Context) error {
	if err := c.rdb.HIncrBy(ctx, c.cfg.Prefix+"stats", "duplicate_deliveries", 1).Err(); err != nil {
		return redisDown("count a duplicate delivery", err)
	}
	return nil
}

// MarkPending shows the objects of accepted events as pending until a worker records
// a result. A recorded entry is never hidden by it: Lookup reads the record first.
func (c *Catalog) MarkPending(ctx context.Context, ps []Pending) error {
	const chunk = 500
	pipe := c.rdb.Pipeline()
	for start := 0; start < len(ps); start += chunk {
		args := make([]any, 0, 1+5*chunk)
		args = append(args, int64(c.cfg.PendingTTL.Seconds()))
		for _, p := range ps[start:min(start+chunk, len(ps))] {
			args = append(args, p.Object, p.Size, p.SHA256, p.PublishedAt.UnixMicro(), p.Channel)
		}
		pendingScript.Eval(ctx, pipe, []string{c.cfg.Prefix}, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisDown("mark pending", err)
	}
	return nil
}

// NoteDeadLettered records on a pending entry why it stays pending: its event was
// dead-lettered, and only an operator's replay (or a new event) moves it on. A
// recorded entry keeps what it has.
func (c *Catalog) NoteDeadLettered(ctx context.Context, object, reason string) error {
	err := deadLetteredScript.Run(ctx, c.rdb, []string{c.cfg.Prefix + "obj:" + object},
		"its release event was dead-lettered ("+reason+"); an operator can replay it").Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return redisDown(fmt.Sprintf("note dead letter on %q", object), err)
	}
	return nil
}

// lookupPending returns the pending entry of an object key.
func (c *Catalog) lookupPending(ctx context.Context, key string) (Entry, error) {
	m, err := c.rdb.HGetAll(ctx, c.cfg.Prefix+"obj:"+key).Result()
	if err != nil {
		return Entry{}, redisDown(fmt.Sprintf("read pending entry %q", key), err)
	}
	if len(m) == 0 || m["state"] != StatePending {
		return Entry{}, fmt.Errorf("%q: %w", key, ErrNotFound)
	}
	d := redisreply.New("pending entry")
	h := d.Hash(m)
	e := Entry{
		Object: h.String("object"), Size: h.Int("size"), SHA256: h.String("sha256"),
		PublishedAt: time.UnixMicro(h.Int("published_us")).UTC(), Channel: h.String("channel"), State: StatePending, Reason: h.String("reason"),
	}
	if err := d.Err(); err != nil {
		return Entry{}, fmt.Errorf("read pending entry %q: %w", key, err)
	}
	return e, nil
}

// Verified returns the cached verification of an object version.
func (c *Catalog) Verified(ctx context.Context, key, etag string) (Verification, bool, error) {
	m, err := c.rdb.HGetAll(ctx, c.verKey(key, etag)).Result()
	if err != nil {
		return Verification{}, false, redisDown(fmt.Sprintf("read verification of %q", key), err)
	}
	if len(m) == 0 {
		return Verification{}, false, nil
	}
	d := redisreply.New("verification")
	v := Verification{Size: d.Hash(m).Int("size"), SHA256: m["sha256"]}
	if err := d.Err(); err != nil {
		return Verification{}, false, fmt.Errorf("read verification of %q: %w", key, err)
	}
	return v, true, nil
}

// StoreVerification caches what a worker measured for an object version.
func (c *Catalog) StoreVerification(ctx context.Context, key, etag string, v Verification) error {
	k := c.verKey(key, etag)
	pipe := c.rdb.TxPipeline()
	pipe.HSet(ctx, k, "size", v.Size, "sha256", v.SHA256)
	pipe.Expire(ctx, k, c.cfg.VerifyTTL)
	pipe.HIncrBy(ctx, c.cfg.Prefix+"stats", "hashes_computed", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return redisDown(fmt.Sprintf("store verification of %q", key), err)
	}
	return nil
}

// LockHashing claims the right to hash an object version for ttl, so that workers
// receiving events for the same version at once hash it once. It reports whether
// this caller holds the claim.
func (c *Catalog) LockHashing(ctx context.Context, key, etag, owner string, ttl time.Duration) (bool, error) {
	ok, err := c.rdb.SetNX(ctx, c.verKey(key, etag)+":lock", owner, ttl).Result()
	if err != nil {
		return false, redisDown(fmt.Sprintf("claim hashing of %q", key), err)
	}
	return ok, nil
}

// UnlockHashing gives a claim back (it may have lapsed; then this does nothing harmful:
// the version is verified by then or will be hashed by the next claimant).
func (c *Catalog) UnlockHashing(ctx context.Context, key, etag string) {
	_ = c.rdb.Del(ctx, c.verKey(key, etag)+":lock").Err()
}

func (c *Catalog) verKey(key, etag string) string {
	return c.cfg.Prefix + "ver:" + etag + ":" + key
}

// Stats are the catalog's counters. They are kept in Redis: a wiped Redis starts them
// again from zero (the records themselves are not counters and come back whole). The
// API shows them as api.CatalogCounters.
type Stats struct {
	Recorded            int64
	Verified            int64
	Rejected            int64
	Superseded          int64
	DuplicateDeliveries int64
	HashesComputed      int64
}

// Stats reads the counters.
func (c *Catalog) Stats(ctx context.Context) (Stats, error) {
	m, err := c.rdb.HGetAll(ctx, c.cfg.Prefix+"stats").Result()
	if err != nil {
		return Stats{}, redisDown("read catalog stats", err)
	}
	d := redisreply.New("catalog stats")
	h := d.Hash(m)
	st := Stats{Recorded: h.Int("recorded"), Verified: h.Int("verified"), Rejected: h.Int("rejected"),
		Superseded: h.Int("superseded"), DuplicateDeliveries: h.Int("duplicate_deliveries"), HashesComputed: h.Int("hashes_computed")}
	if err := d.Err(); err != nil {
		return Stats{}, fmt.Errorf("read catalog stats: %w", err)
	}
	return st, nil
}
