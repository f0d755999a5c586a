package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// A ticket restored from its message after the ledger was lost is admitted only once
// its client shows up: the lost ledger may have ended it moments before, and admitted
// again it would hold a slot behind a link nobody holds. Polled, it takes its old
// place in line (ahead of a ticket queued later); never polled, it is dropped as
// abandoned without ever holding a slot.
func TestRestoredTicketWaitsForItsClient(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AbandonAfter: 400 * time.Millisecond})
		restore := func(id string, seq uint64) {
			t.Helper()
			created, err := l.Restore(t.Context(), admission.Ticket{ID: id, Object: "o", ETag: "e", Size: 10, Tenant: "a", Seq: seq, Created: time.Now()})
			if err != nil || !created {
				t.Fatalf("restore %s: created=%v err=%v", id, created, err)
			}
		}
		admit := func() []admission.Grant {
			t.Helper()
			g, err := l.Admit(t.Context(), 8)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
		restore("gone", 1)
		restore("waiting", 2)
		seq := uint64(2)
		later := enqueue(t, l, "a", 1, &seq)[0]
		// Neither restored ticket is admitted before its client asks for it.
		if g := admit(); len(g) != 1 || g[0].Ticket.ID != later {
			t.Fatalf("admitted %+v, want only %s (the restored tickets were not polled)", g, later)
		}
		if _, err := l.Cancel(t.Context(), later); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Poll(t.Context(), "waiting"); err != nil {
			t.Fatal(err)
		}
		if g := admit(); len(g) != 1 || g[0].Ticket.ID != "waiting" {
			t.Fatalf("admitted %+v after its poll, want waiting", g)
		}
		time.Sleep(500 * time.Millisecond)
		admit() // abandonment runs in the admission round
		p, err := l.Get(t.Context(), "gone")
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != admission.StatusExpired || !p.Admitted.IsZero() {
			t.Fatalf("the unclaimed ticket is %q (admitted %v), want expired without a grant", p.Status, p.Admitted)
		}
	})
}
