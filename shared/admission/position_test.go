package admission_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// With more waiting tenants than ExactTenants a poll reads the position from the
// fair order's shared shape instead of walking every tenant. It stays within the
// documented bound of the exact count (half the tenants whose queues reach the
// ticket's turn, plus one for rounding), also when the shape is stale: admissions
// made since it was built are taken off.
func TestSharedPositionsStayNearTheExactOnes(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		exact := newLedger(t, rdb, admission.Config{GlobalLimit: 1, ExactTenants: 1 << 20})
		cfg := exact.Config()
		cfg.ExactTenants, cfg.OrderMaxAge = 1, time.Hour
		shared := admission.New(rdb, cfg)

		const tenants = 80
		rng := rand.New(rand.NewPCG(1, 2))
		weights := []float64{0.5, 1, 1, 2, 3}
		update := admission.LimitsUpdate{Tenants: map[string]admission.TenantLimits{}}
		for i := range tenants {
			w := weights[rng.IntN(len(weights))]
			update.Tenants[fmt.Sprintf("t%02d", i)] = admission.TenantLimits{Weight: &w}
		}
		if _, err := exact.SetLimits(ctx, update); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		var ids []string
		for i := range tenants {
			ids = append(ids, enqueue(t, exact, fmt.Sprintf("t%02d", i), 1+rng.IntN(12), &seq)...)
			if i%10 == 9 { // tenants join at different virtual times
				for range 5 {
					admitAndFinish(t, exact)
				}
			}
		}
		compare := func(when string) {
			worst := 0
			for _, id := range ids {
				want, err := exact.Poll(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if want.Status != admission.StatusQueued {
					continue
				}
				got, err := shared.Poll(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				diff := int(got.Ahead - want.Ahead)
				if diff < 0 {
					diff = -diff
				}
				worst = max(worst, diff)
				if diff > tenants/2+1 {
					t.Errorf("%s, %s: shared position %d, exact %d", when, id, got.Ahead, want.Ahead)
				}
			}
			t.Logf("%s: worst difference %d over %d tickets, %d tenants", when, worst, len(ids), tenants)
		}
		compare("fresh")
		for range 30 { // the shape is not rebuilt (OrderMaxAge: an hour)
			admitAndFinish(t, exact)
		}
		compare("stale by 30 admissions")
	})
}
