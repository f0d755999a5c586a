// Package apikeys issues and checks API keys. A key is shown once when created and
// stored only as a SHA-256 hash, with its scope and tenant, in a JetStream KV bucket:
// keys are records, replicated and synced like the tickets, and survive the loss of
// Redis. Every check reads the bucket, so a revocation is effective at once on every
// instance.
//
// A key looks like "slk_<id>_<secret>": the id finds the record, the secret is compared
// in constant time against the stored hash.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Scope is what a key may do. Each scope includes the ones below it:
// operator ⊇ publisher ⊇ client.
type Scope string

// Scopes.
const (
	ScopeClient    Scope = "client"
	ScopePublisher Scope = "publisher"
	ScopeOperator  Scope = "operator"
)

var scopeRank = map[Scope]int{ScopeClient: 1, ScopePublisher: 2, ScopeOperator: 3}

// Allows reports whether a key of scope s may act with scope need.
func (s Scope) Allows(need Scope) bool { return scopeRank[s] >= scopeRank[need] && scopeRank[need] > 0 }

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool { return scopeRank[s] > 0 }

// Errors callers branch on.
var (
	ErrInvalidKey = errors.New("invalid API key")
	ErrNotFound   = errors.New("API key not found")
	// ErrUnavailable: the key records cannot be read or written (JetStream is not answering).
	ErrUnavailable = errors.New("API keys cannot be read or written: NATS JetStream is not answering")
	// ErrInvalidRequest: a key cannot be created as asked (an unknown scope, a name too
	// long); the error says what is wrong.
	ErrInvalidRequest = errors.New("invalid API key request")
)

// MaxNameLen is the longest name a key may have, in characters.
const MaxNameLen = 200

// validateName accepts a name of at most MaxNameLen characters of printable text: it
// is shown in `sluice admin` tables and written to logs.
func validateName(name string) error {
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return fmt.Errorf("%w: the name is %d characters long, longer than %d characters", ErrInvalidRequest, n, MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: the name is not valid UTF-8", ErrInvalidRequest)
	}
	for i, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: the name has the control character %U at byte %d", ErrInvalidRequest, r, i)
		}
	}
	return nil
}

// Key is a stored key's public record.
type Key struct {
	ID      string    `json:"id"`
	Scope   Scope     `json:"scope"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created_at"`
}

// Store keeps keys in a JetStream KV bucket (queue.KeysBucket), one entry per key id.
type Store struct {
	kv        jetstream.KeyValue
	bootstrap []byte // SHA-256 of the bootstrap operator key, nil when none
}

// stored is a key's record in the bucket. The secret itself is never stored.
type stored struct {
	Hash    string `json:"hash"` // hex SHA-256 of the secret
	Scope   Scope  `json:"scope"`
	Tenant  string `json:"tenant"`
	Name    string `json:"name,omitempty"`
	Created int64  `json:"created"` // unix seconds
}

// New returns a key store over its bucket. bootstrapKey, when not empty, is accepted
// as an operator key of the tenant "operator" without being stored.
func New(kv jetstream.KeyValue, bootstrapKey string) *Store {
	s := &Store{kv: kv}
	if bootstrapKey != "" {
		h := sha256.Sum256([]byte(bootstrapKey))
		s.bootstrap = h[:]
	}
	return s
}

func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w (%v)", what, ErrUnavailable, err)
}

var enc = base32.StdEncoding.WithPadding(base32.NoPadding)

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(enc.EncodeToString(b))
}

// Generate returns a new random key in the stored format, for bootstrap keys.
func Generate() string { return "slk_" + random(5) + "_" + random(20) }

// Create stores a new key and returns its record and the secret key, which is never
// shown again.
func (s *Store) Create(ctx context.Context, scope Scope, tenant, name string) (Key, string, error) {
	if !scope.Valid() {
		return Key{}, "", fmt.Errorf("%w: unknown scope %q: use client, publisher or operator", ErrInvalidRequest, scope)
	}
	if err := validateName(name); err != nil {
		return Key{}, "", err
	}
	k := Key{ID: random(5), Scope: scope, Tenant: tenant, Name: name, Created: time.Now().UTC().Truncate(time.Second)}
	secret := random(20)
	sum := sha256.Sum256([]byte(secret))
	rec, _ := json.Marshal(stored{Hash: hex.EncodeToString(sum[:]), Scope: scope, Tenant: tenant, Name: name, Created: k.Created.Unix()})
	if _, err := s.kv.Create(ctx, k.ID, rec); err != nil {
		return Key{}, "", unavailable("store API key", err)
	}
	return k, "slk_" + k.ID + "_" + secret, nil
}

// Check returns the record of a presented key, or ErrInvalidKey.
func (s *Store) Check(ctx context.Context, presented string) (Key, error) {
	if s.bootstrap != nil {
		h := sha256.Sum256([]byte(presented))
		if subtle.ConstantTimeCompare(h[:], s.bootstrap) == 1 {
			return Key{ID: "bootstrap", Scope: ScopeOperator, Tenant: "operator", Name: "SLUICE_ADMIN_KEY"}, nil
		}
	}
	rest, ok := strings.CutPrefix(presented, "slk_")
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || len(id) != 8 || len(secret) != 32 {
		return Key{}, ErrInvalidKey
	}
	if !validID(id) {
		return Key{}, ErrInvalidKey
	}
	rec, err := s.read(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Key{}, ErrInvalidKey
	}
	if err != nil {
		return Key{}, err
	}
	want, _ := hex.DecodeString(rec.Hash)
	got := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return Key{}, ErrInvalidKey
	}
	return rec.key(id), nil
}

// validID: ids are what random(5) makes, so nothing else reaches the bucket's subjects.
func validID(id string) bool {
	return len(id) == 8 && !strings.ContainsFunc(id, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') })
}

func (s *Store) read(ctx context.Context, id string) (stored, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return stored{}, ErrNotFound
	}
	if err != nil {
		return stored{}, unavailable("read API key", err)
	}
	var rec stored
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return stored{}, fmt.Errorf("API key %s: unreadable record: %w", id, err)
	}
	return rec, nil
}

func (r stored) key(id string) Key {
	return Key{ID: id, Scope: r.Scope, Tenant: r.Tenant, Name: r.Name, Created: time.Unix(r.Created, 0).UTC()}
}

// Revoke deletes a key; requests with it fail from now on, on every instance.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ErrNotFound
	}
	if err != nil {
		return unavailable("revoke API key", err)
	}
	// Purge, not Delete: nothing of a revoked key is kept, not even its hash.
	if err := s.kv.Purge(ctx, id, jetstream.LastRevision(e.Revision())); err != nil {
		return unavailable("revoke API key", err)
	}
	return nil
}

// List returns every stored key's record (never a secret), oldest first.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("list API keys", err)
	}
	defer lister.Stop()
	var out []Key
	for id := range lister.Keys() {
		rec, err := s.read(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // revoked meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec.key(id))
	}
	slices.SortFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// ImportRedis copies the keys an earlier version of sluice kept in Redis (hashes under
// prefix, "sluice:keys:" when empty) into the bucket, keeping what the bucket has. It
// returns how many it copied; run it once at start after an upgrade. A key it cannot
// read (not a hash, a field that does not parse) is left behind and named in the
// error, while every other key is still copied; only Redis or NATS failing stops it.
func (s *Store) ImportRedis(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	if prefix == "" {
		prefix = "sluice:keys:"
	}
	n := 0
	var skipped []error
	iter := rdb.Scan(ctx, 0, prefix+"*", 200).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), prefix)
		h, err := rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") { // not a hash: not a key
			skipped = append(skipped, fmt.Errorf("read %s: %w", iter.Val(), err))
			continue
		}
		if err != nil {
			return n, fmt.Errorf("import API keys from redis: read %s: %w", iter.Val(), err)
		}
		d := redisreply.New("API key " + id)
		key := d.Hash(h)
		if !validID(id) || key.String("hash") == "" || !Scope(key.String("scope")).Valid() {
			// No id, secret hash or scope a key can be checked with: it grants nothing
			// (or is not a key), so there is nothing to carry over.
			continue
		}
		created := key.Int("created") // Unix seconds
		if err := d.Err(); err != nil {
			skipped = append(skipped, err)
			continue
		}
		rec, _ := json.Marshal(stored{Hash: key.String("hash"), Scope: Scope(key.String("scope")), Tenant: key.String("tenant"),
			Name: key.String("name"), Created: created})
		if _, err := s.kv.Create(ctx, id, rec); err == nil {
			n++
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return n, unavailable("import API key", err)
		}
	}
	if err := iter.Err(); err != nil {
		return n, fmt.Errorf("import API keys from redis: %w", err)
	}
	if len(skipped) > 0 {
		return n, fmt.Errorf("import API keys from redis: %d left behind, the others copied: %w", len(skipped), errors.Join(skipped...))
	}
	return n, nil
}
