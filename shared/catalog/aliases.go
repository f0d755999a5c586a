package catalog

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Channel aliases are derived: the newest verified entry of a channel, read from a
// zset per channel in Redis that every recorded entry updates (alias.lua). The zsets
// are a cache of the entries in JetStream and are rebuilt from them when Redis has
// lost them: the marker "gen" is set only by a complete rebuild, so its absence (a
// FLUSHALL, a new or restarted Redis without persistence) means the zsets cannot be
// trusted, and the next Resolve scans the entries first. Every answer is also checked
// against the entry it names, so a cache that is wrong about its top candidate heals
// itself on the spot.

const (
	resolveCandidates = 8  // candidates checked against their entries per round
	resolveRounds     = 16 // rounds before giving up on a cache that keeps being wrong
	rebuildChunk      = 500
	rebuildClaimTTL   = 10 * time.Minute
)

// Resolve turns a channel alias "<channel>/latest" into the key of the channel's
// newest verified object. Anything else, including an alias of a channel with no
// verified object, is returned unchanged with alias false: a real object may be
// named like an alias, and the alias wins only once its channel has a release.
func (c *Catalog) Resolve(ctx context.Context, name string) (key string, alias bool, err error) {
	channel, ok := strings.CutSuffix(name, AliasSuffix)
	if !ok || ValidateChannel(channel) != nil {
		return name, false, nil
	}
	for range resolveRounds {
		pipe := c.rdb.Pipeline()
		gen := pipe.Exists(ctx, c.cfg.Prefix+"gen")
		top := pipe.ZRevRange(ctx, c.cfg.Prefix+"ch:"+channel, 0, resolveCandidates-1)
		if _, err := pipe.Exec(ctx); err != nil {
			return "", false, redisDown(fmt.Sprintf("resolve alias %q", name), err)
		}
		if gen.Val() == 0 {
			if err := c.RebuildAliases(ctx); err != nil {
				return "", false, err
			}
			continue
		}
		keys := top.Val()
		for _, k := range keys {
			r, rev, found, err := c.readEntry(ctx, k) // the record itself, never the copy: a heal acts on it
			if err != nil {
				return "", false, err
			}
			if found && r.State == StateVerified && r.Channel == channel {
				return k, true, nil
			}
			// The cache is behind the record: correct it, then look at the next one.
			if err := c.healAlias(ctx, channel, k, rev, r, found); err != nil {
				return "", false, err
			}
		}
		if len(keys) < resolveCandidates {
			return name, false, nil
		}
	}
	return "", false, fmt.Errorf("resolve alias %q: the alias cache stayed inconsistent after %d rounds", name, resolveRounds)
}

// healAlias corrects the channel sets for an object found in channel although its
// record (or its absence) says it is not there.
func (c *Catalog) healAlias(ctx context.Context, channel, object string, rev uint64, r record, found bool) error {
	revArg := int64(rev)
	if !found {
		revArg = -1 // no record at all (removed by an operator): the object is in no channel
	}
	err := healScript.Run(ctx, c.rdb, []string{c.cfg.Prefix}, object, revArg, r.State, r.Channel, r.PublishedUS, channel).Err()
	if err != nil {
		return redisDown(fmt.Sprintf("correct the channel aliases of %q", object), err)
	}
	return nil
}

// RebuildAliases rebuilds the channel sets from every entry in JetStream and marks
// them complete. Resolve calls it when the marker is missing; concurrent rebuilds and
// live updates are safe together (each entry is applied at its revision, the newest
// wins), and in one process only one runs at a time.
func (c *Catalog) RebuildAliases(ctx context.Context) error {
	c.rebuildMu.Lock()
	defer c.rebuildMu.Unlock()
	genKey, claimKey := c.cfg.Prefix+"gen", c.cfg.Prefix+"rebuild"
	if n, err := c.rdb.Exists(ctx, genKey).Result(); err != nil {
		return redisDown("read the alias generation", err)
	} else if n == 1 {
		return nil // rebuilt meanwhile by another caller of this process
	}
	token := rand.Text()
	if err := c.rdb.Set(ctx, claimKey, token, rebuildClaimTTL).Err(); err != nil {
		return redisDown("claim the alias rebuild", err)
	}
	w, err := c.entries.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return natsDown("scan the catalog entries", err)
	}
	defer w.Stop()
	var batch []any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := aliasScript.Run(ctx, c.rdb, []string{c.cfg.Prefix}, batch...).Err()
		batch = batch[:0]
		if err != nil {
			return redisDown("rebuild the channel aliases", err)
		}
		return nil
	}
	for {
		var kve jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return natsDown("scan the catalog entries", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return natsDown("scan the catalog entries", errors.New("watcher closed"))
			}
			kve = e
		}
		if kve == nil { // every current entry has been delivered
			break
		}
		var r record
		if err := json.Unmarshal(kve.Value(), &r); err != nil {
			return fmt.Errorf("decode catalog entry %s (revision %d): %w", kve.Key(), kve.Revision(), err)
		}
		batch = append(batch, aliasArgs(kve.Revision(), r)...)
		if len(batch) >= 5*rebuildChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	err = rebuiltScript.Run(ctx, c.rdb, []string{claimKey, genKey}, token).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return redisDown("mark the channel aliases rebuilt", err)
	}
	return nil
}
