// Package token issues and verifies download tokens: the stateless, signed links a
// worker hands out when it admits a ticket and the edge checks on every request.
// Verifying one needs only the keyring; what a token may do at a given moment (is its
// slot still held, how many connections are open on it) is the admission ledger's.
package token

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Errors Verify answers with. The edge maps ErrInvalid to 403 and ErrExpired
// to 410.
var (
	// ErrInvalid: the token is malformed, names an unknown key or its MAC does not match.
	ErrInvalid = errors.New("invalid download token")
	// ErrExpired: the token is genuine but its start window has passed.
	ErrExpired = errors.New("download token expired")
)

const (
	// MaxLen bounds a token's length. Verify rejects longer input before any other
	// work, and Issue refuses claims that would not fit.
	MaxLen = 2048
	// MinKeyLen is the shortest key a Keyring accepts: as many bytes as HMAC-SHA256
	// outputs, so the key is never the weaker half.
	MinKeyLen   = 32
	maxKeyIDLen = 32
)

// b64 encodes every part of a token: URL-safe so a token can sit in a path unescaped,
// unpadded so it contains no '='.
var b64 = base64.RawURLEncoding

// Claims are what a token binds together. Changing any field invalidates the MAC.
//
// Verify ignores members it does not know, so a field can be dropped while tokens
// that carry it are still live: tokens issued before "s" (a slot name that was never
// read; the ticket id names the slot) was removed verify as before, and an edge that
// still knows "s" reads an empty one from a newer token.
type Claims struct {
	Ticket  string    `json:"t"`
	Object  string    `json:"o"`
	ETag    string    `json:"e"`
	Epoch   int64     `json:"f"` // fencing epoch of the slot grant
	Tenant  string    `json:"n,omitempty"`
	RateBps int64     `json:"r,omitempty"` // per-download bandwidth cap, 0 = none
	Expires time.Time `json:"x"`           // no new connection is accepted after this instant
	Trace   string    `json:"p,omitempty"` // W3C traceparent of the admission, so the stream joins the ticket's trace
}

// Keyring holds the HMAC keys tokens are signed with, by key id. New tokens are signed
// with the active key; every key verifies, so a key can be rotated in (made active)
// while tokens signed with the previous one are still valid, and retired once they have
// expired.
type Keyring struct {
	activeID string
	keys     map[string][]byte
}

// NewKeyring builds a keyring from keys by id, signing with keys[activeID]. Ids are 1 to
// 32 characters of [A-Za-z0-9_-]; keys are at least MinKeyLen bytes. The keys are copied.
func NewKeyring(activeID string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no keys")
	}
	k := &Keyring{activeID: activeID, keys: make(map[string][]byte, len(keys))}
	for id, key := range keys {
		if !validKeyID(id) {
			return nil, fmt.Errorf("keyring: key id %q: want 1 to %d characters of A-Z a-z 0-9 _ -", id, maxKeyIDLen)
		}
		if len(key) < MinKeyLen {
			return nil, fmt.Errorf("keyring: key %q is %d bytes, want at least %d", id, len(key), MinKeyLen)
		}
		k.keys[id] = bytes.Clone(key)
	}
	if _, ok := k.keys[activeID]; !ok {
		return nil, fmt.Errorf("keyring: active key %q is not in the keyring", activeID)
	}
	return k, nil
}

// ParseKeyring reads a keyring from configuration: comma-separated "id:key" entries,
// keys in base64 (standard or URL-safe, padding optional), the first entry active and
// the others kept for verification only, e.g. "k2:BASE64,k1:BASE64". Error messages
// never contain key material.
func ParseKeyring(spec string) (*Keyring, error) {
	var activeID string
	keys := make(map[string][]byte)
	for i, entry := range strings.Split(spec, ",") {
		id, encoded, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok {
			return nil, fmt.Errorf("keyring entry %d: want id:base64key", i+1)
		}
		id = strings.TrimSpace(id)
		key, ok := decodeKey(strings.TrimSpace(encoded))
		if !ok {
			return nil, fmt.Errorf("keyring entry %d (%q): key is not base64", i+1, id)
		}
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("keyring entry %d: key id %q appears twice", i+1, id)
		}
		keys[id] = key
		if i == 0 {
			activeID = id
		}
	}
	return NewKeyring(activeID, keys)
}

// GenerateKey returns a new random 32-byte key.
func GenerateKey() []byte {
	key := make([]byte, MinKeyLen)
	_, _ = rand.Read(key) // never fails: crypto/rand crashes the program rather than return an error
	return key
}

// Issue signs c with the active key. The token is
//
//	<kid>.<base64url(sealed claims)>.<base64url(HMAC-SHA256(key, kid "." base64url(sealed claims)))>
//
// where the sealed claims are a random nonce and the JSON claims encrypted with
// AES-256-GCM under a key derived from the signing key (the key id as additional
// data): whoever holds a link can use it, but cannot read which ticket, tenant or
// trace it names. An anonymous ticket's id is its owner's capability, and a link is
// handed to download managers, proxies and logs that must not learn it.
//
// Ticket, Object, ETag and Expires are required: a token must be bound to one version
// of one object and must lapse.
func (k *Keyring) Issue(c Claims) (string, error) {
	if c.Ticket == "" || c.Object == "" || c.ETag == "" || c.Expires.IsZero() {
		return "", errors.New("issue token: ticket, object, etag and expiry are required")
	}
	c.Expires = c.Expires.UTC()
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	sealed, err := seal(k.keys[k.activeID], k.activeID, payload)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	signed := k.activeID + "." + b64.EncodeToString(sealed)
	token := signed + "." + mac(k.keys[k.activeID], signed)
	if len(token) > MaxLen {
		return "", fmt.Errorf("issue token: %d bytes, more than %d", len(token), MaxLen)
	}
	return token, nil
}

// Verify checks token and returns its claims. The MAC is checked (in constant time)
// before the payload is decoded, so unauthenticated input never reaches the JSON
// decoder. A genuine token whose Expires is before now answers ErrExpired; any
// other failure answers ErrInvalid. On error the claims are zero.
func (k *Keyring) Verify(token string, now time.Time) (Claims, error) {
	if len(token) > MaxLen {
		return Claims{}, ErrInvalid
	}
	kid, rest, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	key, ok := k.keys[kid]
	if !ok {
		return Claims{}, ErrInvalid
	}
	// Comparing the encoded MAC rather than decoding the given one leaves no room for
	// alternative encodings of the same bytes (base64 ignores CR and LF, for one).
	want := mac(key, token[:len(kid)+1+len(payload)])
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return Claims{}, ErrInvalid
	}
	sealed, err := b64.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrInvalid
	}
	raw, err := open(key, kid, sealed)
	if err != nil {
		return Claims{}, ErrInvalid
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil || c.Expires.IsZero() {
		return Claims{}, ErrInvalid
	}
	if now.After(c.Expires) {
		return Claims{}, ErrExpired
	}
	return c, nil
}

// String names the keys without revealing them, so a Keyring printed by mistake leaks nothing.
func (k *Keyring) String() string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return fmt.Sprintf("Keyring(active=%s keys=%s)", k.activeID, strings.Join(ids, ","))
}

// GoString is String, for %#v.
func (k *Keyring) GoString() string { return k.String() }

// LogValue is String, for slog.
func (k *Keyring) LogValue() slog.Value { return slog.StringValue(k.String()) }

// claimsKey derives the claims' encryption key from a signing key, so that one secret
// per key id does both jobs without using the same key for two algorithms.
func claimsKey(key []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("sluice download token claims v1"))
	return h.Sum(nil)
}

func aead(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(claimsKey(key))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func seal(key []byte, kid string, plain []byte) ([]byte, error) {
	g, err := aead(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plain)+g.Overhead())
	_, _ = rand.Read(nonce)
	return g.Seal(nonce, nonce, plain, []byte(kid)), nil
}

func open(key []byte, kid string, sealed []byte) ([]byte, error) {
	g, err := aead(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize()+g.Overhead() {
		return nil, errors.New("sealed claims too short")
	}
	return g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], []byte(kid))
}

func mac(key []byte, signed string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(signed))
	return b64.EncodeToString(h.Sum(nil))
}

func validKeyID(id string) bool {
	if id == "" || len(id) > maxKeyIDLen {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func decodeKey(s string) ([]byte, bool) {
	s = strings.TrimRight(s, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	key, err := enc.DecodeString(s)
	return key, err == nil && s != ""
}
