package admission

import (
	"context"
	"fmt"
	"time"
)

// RebindIdempotencyKey binds key to ticketID for ttl whatever it was bound to before:
// for a key whose earlier ticket has ended, so that the next request starts anew.
func (l *Ledger) RebindIdempotencyKey(ctx context.Context, tenant, key, ticketID string, ttl time.Duration) error {
	if err := l.rdb.Set(ctx, l.cfg.Prefix+"idem:"+tenant+":"+key, ticketID, ttl).Err(); err != nil {
		return fmt.Errorf("rebind idempotency key: %w", err)
	}
	return nil
}
