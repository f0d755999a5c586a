// Package catalog is the release catalog: one entry per published object (size,
// SHA-256, ETag, content type, publish time, channel, state), the set of processed
// release events that makes processing exactly-once, channel aliases such as
// "stable/latest", and a cache of verification results per object version. It lives
// in Redis; every change that must be atomic is a Lua script in lua/.
package catalog

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// States of an entry.
const (
	StatePending  = "pending"  // an event was accepted; no worker has verified it yet
	StateVerified = "verified" // size and SHA-256 match the stored object version
	StateRejected = "rejected" // they do not: never served; Reason says why
)

// Outcomes of recording an event.
const (
	OutcomeVerified   = StateVerified
	OutcomeRejected   = StateRejected
	OutcomeSuperseded = "superseded" // a newer event for the object was recorded first
)

// AliasSuffix turns a channel name into a moving alias: "<channel>/latest".
const AliasSuffix = "/latest"

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("object not in the catalog")
	ErrInvalidChannel = errors.New("invalid channel name")
)

var channelPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateChannel reports whether name can be a channel: 1 to 64 lowercase letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func ValidateChannel(name string) error {
	if !channelPattern.MatchString(name) {
		return fmt.Errorf("%w %q: use 1 to 64 lowercase letters, digits, '.', '_' or '-' (like stable or nightly)", ErrInvalidChannel, name)
	}
	return nil
}

var (
	//go:embed lua/record.lua
	recordLua string
	//go:embed lua/pending.lua
	pendingLua string
	//go:embed lua/deadlettered.lua
	deadLetteredLua string

	recordScript       = redis.NewScript(recordLua)
	pendingScript      = redis.NewScript(pendingLua)
	deadLetteredScript = redis.NewScript(deadLetteredLua)
)

// Entry is what the catalog knows about one object. Its JSON is a public contract
// (GET /api/v1/objects/{key}); keep it stable.
type Entry struct {
	Object      string    `json:"object"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	ETag        string    `json:"etag"`
	ContentType string    `json:"content_type"`
	PublishedAt time.Time `json:"published_at"`
	Channel     string    `json:"channel"`
	State       string    `json:"state"`
	Reason      string    `json:"reason"`
}

// Result is the outcome of one event a worker has processed.
type Result struct {
	Identity    string
	Object      string
	Size        int64
	SHA256      string
	ETag        string
	ContentType string
	PublishedAt time.Time
	Channel     string
	State       string // StateVerified or StateRejected
	Reason      string
}

// Pending is an accepted event whose object is shown as pending until verified.
type Pending struct {
	Object      string
	Size        int64
	SHA256      string
	PublishedAt time.Time
	Channel     string
}

// Verification is the measured content of one object version.
type Verification struct {
	Size   int64
	SHA256 string
}

// Config tunes the catalog.
type Config struct {
	Prefix    string        // key prefix with a hash tag, default "sluice:{cat}:"
	EventTTL  time.Duration // how long a processed event is remembered (8 days: longer than the stream keeps events)
	VerifyTTL time.Duration // how long a verification result is cached (30 days)
}

// Catalog is the catalog over one Redis.
type Catalog struct {
	rdb redis.UniversalClient
	cfg Config
}

// New returns a catalog over rdb.
func New(rdb redis.UniversalClient, cfg Config) *Catalog {
	if cfg.Prefix == "" {
		cfg.Prefix = "sluice:{cat}:"
	}
	if cfg.EventTTL == 0 {
		cfg.EventTTL = 8 * 24 * time.Hour
	}
	if cfg.VerifyTTL == 0 {
		cfg.VerifyTTL = 30 * 24 * time.Hour
	}
	return &Catalog{rdb: rdb, cfg: cfg}
}

// Record stores a processed event's result, exactly once per event identity. It
// returns the outcome and whether this call recorded it (false: the event had been
// recorded before, and nothing changed).
func (c *Catalog) Record(ctx context.Context, r Result) (outcome string, recorded bool, err error) {
	vals, err := recordScript.Run(ctx, c.rdb, []string{c.cfg.Prefix},
		r.Identity, int64(c.cfg.EventTTL.Seconds()), r.Object, r.Size, r.SHA256, r.ETag,
		r.ContentType, r.PublishedAt.UnixMicro(), r.Channel, r.State, r.Reason).Slice()
	if err != nil {
		return "", false, fmt.Errorf("record event %s: %w", r.Identity, err)
	}
	if len(vals) != 2 {
		return "", false, fmt.Errorf("record event %s: unexpected answer %v", r.Identity, vals)
	}
	n, _ := vals[0].(int64)
	outcome, _ = vals[1].(string)
	return outcome, n == 1, nil
}

// Processed returns the outcome of an event identity, or "" if it was not processed.
func (c *Catalog) Processed(ctx context.Context, identity string) (string, error) {
	v, err := c.rdb.Get(ctx, c.cfg.Prefix+"ev:"+identity).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read event %s: %w", identity, err)
	}
	return v, nil
}

// NoteDuplicate counts a delivery of an event that had been processed before.
func (c *Catalog) NoteDuplicate(ctx context.Context) error {
	return c.rdb.HIncrBy(ctx, c.cfg.Prefix+"stats", "duplicate_deliveries", 1).Err()
}

// MarkPending shows the objects of accepted events as pending, unless the catalog
// already has an entry for them.
func (c *Catalog) MarkPending(ctx context.Context, ps []Pending) error {
	const chunk = 500
	pipe := c.rdb.Pipeline()
	for start := 0; start < len(ps); start += chunk {
		args := make([]any, 0, 5*chunk)
		for _, p := range ps[start:min(start+chunk, len(ps))] {
			args = append(args, p.Object, p.Size, p.SHA256, p.PublishedAt.UnixMicro(), p.Channel)
		}
		// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT, and the script is small.
		pendingScript.Eval(ctx, pipe, []string{c.cfg.Prefix}, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("mark pending: %w", err)
	}
	return nil
}

// NoteDeadLettered records on a pending entry why it stays pending: its event was
// dead-lettered, and only an operator's replay (or a new event) moves it on. An entry
// in another state keeps what it has.
func (c *Catalog) NoteDeadLettered(ctx context.Context, object, reason string) error {
	err := deadLetteredScript.Run(ctx, c.rdb, []string{c.cfg.Prefix + "obj:" + object},
		"its release event was dead-lettered ("+reason+"); an operator can replay it").Err()
	if err != nil {
		return fmt.Errorf("note dead letter on %q: %w", object, err)
	}
	return nil
}

// Lookup returns the entry of an object key.
func (c *Catalog) Lookup(ctx context.Context, key string) (Entry, error) {
	m, err := c.rdb.HGetAll(ctx, c.cfg.Prefix+"obj:"+key).Result()
	if err != nil {
		return Entry{}, fmt.Errorf("read catalog entry %q: %w", key, err)
	}
	if len(m) == 0 {
		return Entry{}, fmt.Errorf("%q: %w", key, ErrNotFound)
	}
	size, _ := strconv.ParseInt(m["size"], 10, 64)
	pub, _ := strconv.ParseInt(m["published_us"], 10, 64)
	return Entry{
		Object: m["object"], Size: size, SHA256: m["sha256"], ETag: m["etag"],
		ContentType: m["content_type"], PublishedAt: time.UnixMicro(pub).UTC(),
		Channel: m["channel"], State: m["state"], Reason: m["reason"],
	}, nil
}

// Resolve turns a channel alias "<channel>/latest" into the key of the channel's
// newest verified object. Anything else, including an alias of a channel with no
// verified object, is returned unchanged with alias false: a real object may be
// named like an alias, and the alias wins only once its channel has a release.
func (c *Catalog) Resolve(ctx context.Context, name string) (key string, alias bool, err error) {
	channel, ok := strings.CutSuffix(name, AliasSuffix)
	if !ok || ValidateChannel(channel) != nil {
		return name, false, nil
	}
	keys, err := c.rdb.ZRevRange(ctx, c.cfg.Prefix+"ch:"+channel, 0, 0).Result()
	if err != nil {
		return "", false, fmt.Errorf("resolve alias %q: %w", name, err)
	}
	if len(keys) == 0 {
		return name, false, nil
	}
	return keys[0], true, nil
}

// Verified returns the cached verification of an object version.
func (c *Catalog) Verified(ctx context.Context, key, etag string) (Verification, bool, error) {
	m, err := c.rdb.HGetAll(ctx, c.verKey(key, etag)).Result()
	if err != nil {
		return Verification{}, false, fmt.Errorf("read verification of %q: %w", key, err)
	}
	if len(m) == 0 {
		return Verification{}, false, nil
	}
	size, _ := strconv.ParseInt(m["size"], 10, 64)
	return Verification{Size: size, SHA256: m["sha256"]}, true, nil
}

// StoreVerification caches what a worker measured for an object version.
func (c *Catalog) StoreVerification(ctx context.Context, key, etag string, v Verification) error {
	k := c.verKey(key, etag)
	pipe := c.rdb.TxPipeline()
	pipe.HSet(ctx, k, "size", v.Size, "sha256", v.SHA256)
	pipe.Expire(ctx, k, c.cfg.VerifyTTL)
	pipe.HIncrBy(ctx, c.cfg.Prefix+"stats", "hashes_computed", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store verification of %q: %w", key, err)
	}
	return nil
}

// LockHashing claims the right to hash an object version for ttl, so that workers
// receiving events for the same version at once hash it once. It reports whether
// this caller holds the claim.
func (c *Catalog) LockHashing(ctx context.Context, key, etag, owner string, ttl time.Duration) (bool, error) {
	ok, err := c.rdb.SetNX(ctx, c.verKey(key, etag)+":lock", owner, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("claim hashing of %q: %w", key, err)
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

// Stats are the catalog's counters since it was created.
type Stats struct {
	Recorded            int64 `json:"events_recorded"`
	Verified            int64 `json:"verified"`
	Rejected            int64 `json:"rejected"`
	Superseded          int64 `json:"superseded"`
	DuplicateDeliveries int64 `json:"duplicate_deliveries"`
	HashesComputed      int64 `json:"hashes_computed"`
}

// Stats reads the counters.
func (c *Catalog) Stats(ctx context.Context) (Stats, error) {
	m, err := c.rdb.HGetAll(ctx, c.cfg.Prefix+"stats").Result()
	if err != nil {
		return Stats{}, fmt.Errorf("read catalog stats: %w", err)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return Stats{Recorded: n("recorded"), Verified: n("verified"), Rejected: n("rejected"),
		Superseded: n("superseded"), DuplicateDeliveries: n("duplicate_deliveries"), HashesComputed: n("hashes_computed")}, nil
}

// Ping checks that Redis answers.
func (c *Catalog) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }
