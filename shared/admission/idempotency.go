package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Idempotency bindings are records: a retry after any loss of Redis, or a restart of
// the all-in-one, must find its first ticket, not make a second one. They live in
// JetStream KV (Config.Bindings, queue.IdempotencyBucket); the bucket's TTL bounds how
// long a binding is kept at all, and each binding carries its own expiry.

// binding is one Idempotency-Key's record.
type binding struct {
	Ticket  string `json:"ticket"`
	Expires int64  `json:"expires_ms"`
}

// bindingKey names a binding in the bucket: a hash, since keys and tenants may hold
// characters KV keys cannot.
func bindingKey(tenant, key string) string {
	sum := sha256.Sum256([]byte(tenant + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// ClaimIdempotencyKey binds a client's Idempotency-Key (scoped to its tenant) to a
// ticket id for ttl. If the key was already bound it returns the earlier ticket id and
// binds nothing.
func (l *Ledger) ClaimIdempotencyKey(ctx context.Context, tenant, key, ticketID string, ttl time.Duration) (string, error) {
	if l.cfg.Bindings == nil {
		return "", errNoRecords
	}
	k := bindingKey(tenant, key)
	now := time.Now()
	data, _ := json.Marshal(binding{Ticket: ticketID, Expires: now.Add(ttl).UnixMilli()})
	for range 8 {
		_, err := l.cfg.Bindings.Create(ctx, k, data)
		if err == nil {
			return ticketID, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", recordsUnavailable("claim idempotency key", err)
		}
		e, err := l.cfg.Bindings.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // removed meanwhile: claim it again
		}
		if err != nil {
			return "", recordsUnavailable("read idempotency key", err)
		}
		var b binding
		if json.Unmarshal(e.Value(), &b) == nil && b.Expires > now.UnixMilli() && b.Ticket != "" {
			return b.Ticket, nil
		}
		// Lapsed: take it over, unless someone else does first.
		if _, err := l.cfg.Bindings.Update(ctx, k, data, e.Revision()); err == nil {
			return ticketID, nil
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return "", recordsUnavailable("claim idempotency key", err)
		}
	}
	return "", fmt.Errorf("claim idempotency key: too many concurrent claims; retry")
}

// RebindIdempotencyKey binds key to ticketID for ttl whatever it was bound to before:
// for a key whose earlier ticket has ended, so that the next request starts anew.
func (l *Ledger) RebindIdempotencyKey(ctx context.Context, tenant, key, ticketID string, ttl time.Duration) error {
	if l.cfg.Bindings == nil {
		return errNoRecords
	}
	data, _ := json.Marshal(binding{Ticket: ticketID, Expires: time.Now().Add(ttl).UnixMilli()})
	if _, err := l.cfg.Bindings.Put(ctx, bindingKey(tenant, key), data); err != nil {
		return recordsUnavailable("rebind idempotency key", err)
	}
	return nil
}
