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

// Binding is what an Idempotency-Key is bound to: the first request's ticket and the
// object it asked for.
type Binding struct {
	Ticket  string `json:"ticket"`
	Object  string `json:"object,omitempty"`
	Expires int64  `json:"expires_ms"`
}

// bindingKey names a binding in the bucket: a hash, since keys and scopes may hold
// characters KV keys cannot.
func bindingKey(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// ClaimIdempotencyKey binds a client's Idempotency-Key, within scope (whose key it is:
// an API key, or a client address), to the ticket made for object, for ttl. If the key
// was already bound it returns that earlier binding and binds nothing.
func (l *Ledger) ClaimIdempotencyKey(ctx context.Context, scope, key, ticketID, object string, ttl time.Duration) (Binding, error) {
	if l.cfg.Bindings == nil {
		return Binding{}, errNoRecords
	}
	k := bindingKey(scope, key)
	now := time.Now()
	mine := Binding{Ticket: ticketID, Object: object, Expires: now.Add(ttl).UnixMilli()}
	data, _ := json.Marshal(mine)
	for range 8 {
		_, err := l.cfg.Bindings.Create(ctx, k, data)
		if err == nil {
			return mine, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Binding{}, recordsUnavailable("claim idempotency key", err)
		}
		e, err := l.cfg.Bindings.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // removed meanwhile: claim it again
		}
		if err != nil {
			return Binding{}, recordsUnavailable("read idempotency key", err)
		}
		var b Binding
		if json.Unmarshal(e.Value(), &b) == nil && b.Expires > now.UnixMilli() && b.Ticket != "" {
			return b, nil
		}
		// Lapsed: take it over, unless someone else does first.
		if _, err := l.cfg.Bindings.Update(ctx, k, data, e.Revision()); err == nil {
			return mine, nil
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return Binding{}, recordsUnavailable("claim idempotency key", err)
		}
	}
	return Binding{}, fmt.Errorf("claim idempotency key: too many concurrent claims; retry")
}

// RebindIdempotencyKey binds key to ticketID for ttl whatever it was bound to before:
// for a key whose earlier ticket has ended, so that the next request starts anew.
func (l *Ledger) RebindIdempotencyKey(ctx context.Context, scope, key, ticketID, object string, ttl time.Duration) error {
	if l.cfg.Bindings == nil {
		return errNoRecords
	}
	data, _ := json.Marshal(Binding{Ticket: ticketID, Object: object, Expires: time.Now().Add(ttl).UnixMilli()})
	if _, err := l.cfg.Bindings.Put(ctx, bindingKey(scope, key), data); err != nil {
		return recordsUnavailable("rebind idempotency key", err)
	}
	return nil
}
