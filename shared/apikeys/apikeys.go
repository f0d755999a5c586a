// Package apikeys issues and checks API keys. A key is shown once when created and
// stored only as a SHA-256 hash in Redis, with its scope and tenant. Every check reads
// Redis, so a revocation is effective at once on every instance.
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
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
)

// Key is a stored key's public record.
type Key struct {
	ID      string    `json:"id"`
	Scope   Scope     `json:"scope"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created_at"`
}

// Store keeps keys in Redis.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	bootstrap []byte // SHA-256 of the bootstrap operator key, nil when none
}

// New returns a key store. bootstrapKey, when not empty, is accepted as an operator
// key of the tenant "operator" without being stored.
func New(rdb redis.UniversalClient, prefix, bootstrapKey string) *Store {
	if prefix == "" {
		prefix = "sluice:keys:"
	}
	s := &Store{rdb: rdb, prefix: prefix}
	if bootstrapKey != "" {
		h := sha256.Sum256([]byte(bootstrapKey))
		s.bootstrap = h[:]
	}
	return s
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
		return Key{}, "", fmt.Errorf("unknown scope %q: use client, publisher or operator", scope)
	}
	if len(name) > 200 {
		return Key{}, "", errors.New("key name longer than 200 characters")
	}
	k := Key{ID: random(5), Scope: scope, Tenant: tenant, Name: name, Created: time.Now().UTC().Truncate(time.Second)}
	secret := random(20)
	sum := sha256.Sum256([]byte(secret))
	err := s.rdb.HSet(ctx, s.prefix+k.ID, map[string]any{
		"hash": hex.EncodeToString(sum[:]), "scope": string(scope), "tenant": tenant,
		"name": name, "created": k.Created.Unix(),
	}).Err()
	if err != nil {
		return Key{}, "", fmt.Errorf("store API key: %w", err)
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
	h, err := s.rdb.HGetAll(ctx, s.prefix+id).Result()
	if err != nil {
		return Key{}, fmt.Errorf("read API key: %w", err)
	}
	want, _ := hex.DecodeString(h["hash"])
	got := sha256.Sum256([]byte(secret))
	if len(h) == 0 || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return Key{}, ErrInvalidKey
	}
	return record(id, h), nil
}

func record(id string, h map[string]string) Key {
	var created int64
	fmt.Sscan(h["created"], &created)
	return Key{ID: id, Scope: Scope(h["scope"]), Tenant: h["tenant"], Name: h["name"], Created: time.Unix(created, 0).UTC()}
}

// Revoke deletes a key; requests with it fail from now on, on every instance.
func (s *Store) Revoke(ctx context.Context, id string) error {
	n, err := s.rdb.Del(ctx, s.prefix+id).Result()
	if err != nil {
		return fmt.Errorf("revoke API key: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// List returns every stored key's record (never a secret), oldest first.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	var out []Key
	iter := s.rdb.Scan(ctx, 0, s.prefix+"*", 200).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), s.prefix)
		h, err := s.rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return nil, fmt.Errorf("list API keys: %w", err)
		}
		if len(h) > 0 {
			out = append(out, record(id, h))
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	slices.SortFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out, nil
}
