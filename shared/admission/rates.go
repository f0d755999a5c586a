package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// TenantRate returns the per-download bandwidth cap set for tenant (limits field
// rate:<tenant>, bytes per second), 0 when none is set.
func (l *Ledger) TenantRate(ctx context.Context, tenant string) (int64, error) {
	field := "rate:" + tenant
	v, err := l.rdb.HGet(ctx, l.limitsKey(), field).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable("read rate of tenant "+tenant, err)
	}
	d := redisreply.New("limits")
	n := d.Hash(map[string]string{field: v}).Int(field)
	if err := d.Err(); err != nil {
		return 0, fmt.Errorf("read rate of tenant %s: %w", tenant, err)
	}
	return n, nil
}
