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

// PollAs keeps a ticket alive only for its owner (or an operator, or anyone when the
// ticket has no owner): a poll by another tenant reads it as Get does.
func TestPollAsTouchesOnlyTheOwnersTickets(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		for _, tk := range []admission.Ticket{
			{ID: "owned", Tenant: "acme", Owner: "acme", Seq: 1},
			{ID: "anon", Tenant: "public", Seq: 2},
		} {
			tk.Object, tk.ETag, tk.Size, tk.Created = "o", "e", 10, time.Now()
			if _, err := l.Enqueue(ctx, tk); err != nil {
				t.Fatal(err)
			}
		}
		// a touch of a queued ticket is its score in `polls`: set back to 1 before each poll
		const polls = "sluice:{adm}:polls"
		untouch := func(id string) { rdb.ZAddXX(ctx, polls, redis.Z{Score: 1, Member: id}) }
		polled := func(id string) bool { return rdb.ZScore(ctx, polls, id).Val() > 1 }
		for _, c := range []struct {
			id, as string
			touch  bool
		}{
			{"owned", "other", false}, {"owned", "", false}, {"owned", "acme", true},
			{"anon", "", true}, {"anon", "other", true},
		} {
			untouch(c.id)
			p, err := l.PollAs(ctx, c.id, c.as)
			if err != nil || p.ID != c.id {
				t.Fatalf("poll %s as %q: %+v %v", c.id, c.as, p, err)
			}
			if polled(c.id) != c.touch {
				t.Errorf("poll of %s as %q: kept alive %v, want %v", c.id, c.as, polled(c.id), c.touch)
			}
		}
		untouch("owned")
		if _, err := l.PollAs(ctx, "owned", admission.AnyOwner); err != nil || !polled("owned") {
			t.Errorf("an operator's poll did not keep the ticket alive (%v)", err)
		}
	})
}
