package admission_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// A ledger wiped while two streams run (FLUSHALL): the limits come back from their
// record, not the flags; nothing is admitted until the live streams had a lease to
// re-register; the one that renews takes its slot back; the limit holds throughout;
// and epochs of the new generation are above every old one.
func TestWipedLedgerRebuildsUnderItsLimits(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const lease = 600 * time.Millisecond
		live := false // tickets in the stream: none at the first build
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 10, StreamLease: lease, ResumeGrace: lease,
			LiveTickets: func(context.Context) (bool, error) { return live, nil }})
		two := 2
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Global: &two}); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		ids := enqueue(t, l, "public", 4, &seq)
		grants, err := l.Admit(ctx, 10)
		if err != nil || len(grants) != 2 {
			t.Fatalf("admit under the operator's limit 2: %v %v", grants, err)
		}
		for _, g := range grants {
			if err := l.MarkReady(ctx, g, "http://edge/d/x", time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := l.BeginStream(ctx, stream(g.Ticket.ID, "c", g.Epoch)); err != nil {
				t.Fatal(err)
			}
		}

		live = true
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Admit(ctx, 10); !errors.Is(err, admission.ErrNoGeneration) {
			t.Fatalf("admit on a wiped ledger: %v, want ErrNoGeneration", err)
		}
		if built, err := l.Rebuild(ctx); err != nil || !built {
			t.Fatalf("rebuild: %v %v", built, err)
		}
		if built, _ := l.Rebuild(ctx); built {
			t.Fatal("a second rebuild of the same generation built again")
		}
		if lim, err := l.Limits(ctx); err != nil || lim.Global != 2 {
			t.Fatalf("limits after the wipe: %+v %v, want the operator's 2", lim, err)
		}
		for i, id := range ids { // the workers refill the ledger from the stream
			if _, err := l.Enqueue(ctx, admission.Ticket{ID: id, Object: "o", ETag: "e", Size: 10, Tenant: "public", Seq: uint64(i + 1), Created: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		if g, err := l.Admit(ctx, 10); err != nil || len(g) != 0 {
			t.Fatalf("admitted %v (%v) during the pause after a rebuild", g, err)
		}
		// The first stream renews with its old token: it is counted again.
		first := grants[0]
		if err := l.RenewStream(ctx, stream(first.Ticket.ID, "c", first.Epoch), 3, 3); err != nil {
			t.Fatalf("re-register the running stream: %v", err)
		}
		if p, _ := l.Get(ctx, first.Ticket.ID); p.Status != admission.StatusStreaming || p.BytesSent != 3 {
			t.Fatalf("re-registered ticket: %+v", p.Ticket)
		}

		// Once the pause is over, one more may be admitted, never two.
		var fresh []admission.Grant
		deadline := time.Now().Add(10 * time.Second)
		for len(fresh) == 0 && time.Now().Before(deadline) {
			// the edge keeps renewing, every third of a lease
			if err := l.RenewStream(ctx, stream(first.Ticket.ID, "c", first.Epoch), 0, 3); err != nil {
				t.Fatal(err)
			}
			g, err := l.Admit(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			fresh = append(fresh, g...)
			time.Sleep(20 * time.Millisecond)
		}
		if len(fresh) != 1 || fresh[0].Ticket.ID != ids[1] {
			t.Fatalf("after the pause: %v, want the second ticket alone (the first holds a slot again)", fresh)
		}
		if fresh[0].Epoch <= grants[1].Epoch {
			t.Fatalf("new epoch %d is not above the old %d", fresh[0].Epoch, grants[1].Epoch)
		}
		// The second stream's old token is fenced: its ticket was admitted anew.
		if err := l.RenewStream(ctx, stream(grants[1].Ticket.ID, "c", grants[1].Epoch), 1, 1); err != admission.ErrSlotNotHeld {
			t.Fatalf("old token of a re-admitted ticket: %v, want ErrSlotNotHeld", err)
		}
		if st, err := l.Stats(ctx); err != nil || st.InUse != 2 {
			t.Fatalf("slots in use %d (%v), want 2", st.InUse, err)
		}
	})
}

// Limits an earlier version kept only in Redis become the record at the first rebuild
// after the upgrade, and are then what every rebuild restores.
func TestRebuildImportsLimitsAnEarlierVersionKeptInRedis(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 10})
		rdb.Del(ctx, "sluice:{adm}:gen")
		rdb.HSet(ctx, "sluice:{adm}:limits", "global", 3, "weight:acme", 2.5, "tenant:acme", 1, "paused", 1)
		if _, err := l.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		rdb.FlushAll(ctx)
		if _, err := l.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		lim, err := l.Limits(ctx)
		acme := lim.Tenants["acme"]
		if err != nil || lim.Global != 3 || !lim.Paused || acme.Weight == nil || *acme.Weight != 2.5 || acme.Limit == nil || *acme.Limit != 1 {
			t.Fatalf("limits after import and a wipe: %+v %v", lim, err)
		}
		if v, _ := rdb.HGet(ctx, "sluice:{adm}:limits", "global").Result(); v != "3" {
			t.Fatalf("the ledger's copy after the rebuild: global=%q", v)
		}
	})
}
