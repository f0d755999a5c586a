package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// Accept answers a new ticket with what its owner's first poll would read (place in
// line under the fair order, estimate, pause) from the one script run that records
// it; a ticket recorded before is read back as a poll reads it.
func TestAcceptAnswersAsAPoll(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		two := 2.0
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Tenants: map[string]admission.TenantLimits{"gold": {Weight: &two}}}); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		enqueue(t, l, "gold", 5, &seq)
		enqueue(t, l, "free", 3, &seq)
		if _, err := l.Admit(ctx, 1); err != nil {
			t.Fatal(err)
		}
		for _, tenant := range []string{"free", "gold", "new"} {
			seq++
			tk := admission.Ticket{ID: tenant + "-accepted", Object: "o", ETag: "e", Size: 10, Tenant: tenant, Owner: tenant, Seq: seq, Created: time.Now()}
			got, err := l.Accept(ctx, tk)
			if err != nil {
				t.Fatal(err)
			}
			want, err := l.Get(ctx, tk.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != admission.StatusQueued || got.Ahead != want.Ahead || got.ETAKnown != want.ETAKnown || got.Paused != want.Paused {
				t.Errorf("%s: Accept answered %s at %d (estimate known %v, paused %v); a poll reads %s at %d (%v, %v)", tenant,
					got.Status, got.Ahead, got.ETAKnown, got.Paused, want.Status, want.Ahead, want.ETAKnown, want.Paused)
			}
			if got.ID != tk.ID || got.Owner != want.Owner || !got.Created.Equal(want.Created) {
				t.Errorf("%s: Accept answered ticket %+v, the ledger holds %+v", tenant, got.Ticket, want.Ticket)
			}
			if got.Ahead == 0 {
				t.Errorf("%s: a ticket behind 7 others answered position 0", tenant)
			}
		}

		// A retried request finds its ticket: answered as it is now, not created again.
		if err := l.SetPaused(ctx, true); err != nil {
			t.Fatal(err)
		}
		again, err := l.Accept(ctx, admission.Ticket{ID: "free-accepted", Tenant: "free", Seq: seq + 1, Created: time.Now()})
		if err != nil || again.Status != admission.StatusQueued || !again.Paused || again.Object != "o" {
			t.Fatalf("accept again: %+v %v", again, err)
		}
	})
}
