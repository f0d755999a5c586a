package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// TenantRate returns the per-download bandwidth cap set for tenant (limits field
// rate:<tenant>, bytes per second), 0 when none is set.
func (l *Ledger) TenantRate(ctx context.Context, tenant string) (int64, error) {
	n, err := l.rdb.HGet(ctx, l.limitsKey(), "rate:"+tenant).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read rate of tenant %s: %w", tenant, err)
	}
	return n, nil
}
