// Package catalog is the release catalog: one entry per published object (size,
// SHA-256, ETag, content type, publish time, channel, state), the processed release
// events that make processing exactly-once, channel aliases such as "stable/latest",
// and a cache of verification results per object version.
//
// What must survive anything is a record in JetStream key-value buckets (records.go):
// the entries in their final states (verified, rejected) and the processed events.
// Everything else is in Redis and can be lost at any moment (derived.go, aliases.go):
// the channel aliases are rebuilt from the entries when Redis has lost them, pending
// entries only bridge the seconds between acceptance and verification, and the
// verification cache, hashing claims and counters cost at most some work again.
package catalog

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/queue"
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

// Names of the key-value buckets that hold the catalog's records.
const (
	EntryBucket = "SLUICE_CATALOG"        // one key per object: its final entry
	EventBucket = "SLUICE_RELEASE_EVENTS" // one key per processed event identity: its outcome
)

// Dependencies named by an UnavailableError.
const (
	DependencyNATS  = "nats"
	DependencyRedis = "redis"
)

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("object not in the catalog")
	ErrInvalidChannel = errors.New("invalid channel name")
	// ErrUnavailable: NATS or Redis did not answer; the error is an *UnavailableError
	// naming which one.
	ErrUnavailable = errors.New("release catalog unavailable")
)

// UnavailableError says which dependency of the catalog failed to answer.
type UnavailableError struct {
	Dependency string // DependencyNATS or DependencyRedis
	Err        error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("release catalog: %s is not answering: %v", e.Dependency, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func natsDown(what string, err error) error {
	return &UnavailableError{Dependency: DependencyNATS, Err: fmt.Errorf("%s: %w", what, err)}
}

func redisDown(what string, err error) error {
	return &UnavailableError{Dependency: DependencyRedis, Err: fmt.Errorf("%s: %w", what, err)}
}

var channelPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateChannel reports whether name can be a channel: 1 to 64 lowercase letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func ValidateChannel(name string) error {
	if !channelPattern.MatchString(name) {
		return fmt.Errorf("%w %q: use 1 to 64 lowercase letters, digits, '.', '_' or '-' (like stable or nightly)", ErrInvalidChannel, name)
	}
	return nil
}

// Entry is what the catalog knows about one object. The API shows it as
// api.CatalogEntry (the ingress converts it, in wireEntry).
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
	Prefix     string        // Redis key prefix with a hash tag, default "sluice:{cat}:"
	EventTTL   time.Duration // how long a processed event is remembered (8 days: longer than the stream keeps events)
	VerifyTTL  time.Duration // how long a verification result is cached (30 days)
	PendingTTL time.Duration // how long a pending entry is shown without a result (30 days, as long as dead letters are kept)
	Replicas   int           // replicas of the buckets: the same as the streams' (1 on one machine, 3 in a cluster)
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "sluice:{cat}:"
	}
	if c.EventTTL == 0 {
		c.EventTTL = 8 * 24 * time.Hour
	}
	if c.VerifyTTL == 0 {
		c.VerifyTTL = 30 * 24 * time.Hour
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = 30 * 24 * time.Hour
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
}

// Catalog is the catalog over two key-value buckets and one Redis.
type Catalog struct {
	entries jetstream.KeyValue
	events  jetstream.KeyValue
	rdb     redis.UniversalClient
	cfg     Config

	rebuildMu sync.Mutex // one alias rebuild at a time in this process
	cache     entryCache // the entries as Follow last saw them (follow.go)
}

// Open creates or updates the catalog's buckets (records like the others: file
// storage, cfg.Replicas, retried until ctx ends, see queue.Ensure) and returns the
// catalog.
func Open(ctx context.Context, js jetstream.JetStream, rdb redis.UniversalClient, cfg Config) (*Catalog, error) {
	cfg.setDefaults()
	entries, err := queue.EnsureRecords(ctx, js, queue.RecordConfig{
		Bucket:      EntryBucket,
		Description: "release catalog: the verified or rejected entry of each object (key: base64url of the object key)",
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, err
	}
	events, err := queue.EnsureRecords(ctx, js, queue.RecordConfig{
		Bucket:      EventBucket,
		Description: "processed release events: outcome per event identity (key: hex SHA-256 of the identity)",
		Replicas:    cfg.Replicas,
		TTL:         cfg.EventTTL,
	})
	if err != nil {
		return nil, err
	}
	return &Catalog{entries: entries, events: events, rdb: rdb, cfg: cfg}, nil
}

// OpenEntries binds to the entries bucket another role created (sluice init, a worker,
// an ingress), retried until ctx ends (queue.Ensure), and returns a catalog that only
// reads verified and rejected entries: Recorded and Follow. It is for a process that
// checks what it serves against the catalog without taking part in publishing (an
// edge's cache), so it needs no Redis and never changes a bucket's configuration.
func OpenEntries(ctx context.Context, js jetstream.JetStream) (*Catalog, error) {
	entries, err := queue.Ensure(ctx, "open the catalog bucket "+EntryBucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.KeyValue(ctx, EntryBucket)
	})
	if err != nil {
		return nil, err
	}
	cfg := Config{}
	cfg.setDefaults()
	return &Catalog{entries: entries, cfg: cfg}, nil
}

// Ping checks that both NATS and Redis answer.
func (c *Catalog) Ping(ctx context.Context) error {
	if _, err := c.entries.Status(ctx); err != nil {
		return natsDown("read bucket status", err)
	}
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return redisDown("ping", err)
	}
	return nil
}
