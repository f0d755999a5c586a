package admission_test

import (
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// Every ticket that ends is in the log, once, in order, and a reader takes up where
// it left off; a ledger that was rebuilt has another generation.
func TestEndLogNamesEveryEndedTicket(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 10})
		cursor, gen, err := l.EndLogTail(ctx)
		if err != nil || cursor != admission.EndLogStart || gen == "" {
			t.Fatalf("tail of a new ledger: %q %q %v", cursor, gen, err)
		}
		var seq uint64
		ids := enqueue(t, l, "a", 4, &seq)
		for _, id := range ids[:2] {
			if _, err := l.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		log, err := l.EndedSince(ctx, cursor, 100)
		if err != nil || !slices.Equal(log.IDs, ids[:2]) || log.Gap || log.Generation != gen {
			t.Fatalf("after two cancels: %+v %v", log, err)
		}
		// Admitted, then its link lapses: ended by reclaim, in another script.
		grants, err := l.Admit(ctx, 1)
		if err != nil || len(grants) != 1 || grants[0].Ticket.Object != "o" || grants[0].Ticket.Tenant != "a" {
			t.Fatalf("admit: %+v %v", grants, err)
		}
		if _, err := l.Cancel(ctx, ids[3]); err != nil {
			t.Fatal(err)
		}
		next, err := l.EndedSince(ctx, log.Next, 100)
		if err != nil || !slices.Equal(next.IDs, ids[3:]) || next.Gap {
			t.Fatalf("read on from %s: %+v %v", log.Next, next, err)
		}
		if again, err := l.EndedSince(ctx, next.Next, 100); err != nil || len(again.IDs) != 0 || again.Next != next.Next {
			t.Fatalf("nothing new: %+v %v", again, err)
		}
		if tail, _, err := l.EndLogTail(ctx); err != nil || tail != next.Next {
			t.Fatalf("tail %q, want %q (%v)", tail, next.Next, err)
		}
		ts, err := l.Tickets(ctx, []string{ids[0], "nope", ids[2]})
		if err != nil || ts[0].Status != admission.StatusCanceled || ts[1].ID != "" || ts[2].Status != admission.StatusAdmitting {
			t.Fatalf("tickets: %+v %v", ts, err)
		}

		// The log lost what followed the cursor (trimmed, or Redis lost it all).
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		more := enqueue(t, l, "b", 1, &seq)
		if _, err := l.Cancel(ctx, more[0]); err != nil {
			t.Fatal(err)
		}
		// The new generation is the reader's signal (a worker then checks every ticket
		// it holds and reads the new log from its start): the old cursor means nothing
		// in the new log, whose ids may even repeat it within the same millisecond.
		after, err := l.EndedSince(ctx, next.Next, 100)
		if err != nil || after.Generation == gen {
			t.Fatalf("after a rebuild: %+v %v, want a new generation", after, err)
		}
		fresh, err := l.EndedSince(ctx, admission.EndLogStart, 100)
		if err != nil || !slices.Equal(fresh.IDs, more) || fresh.Generation != after.Generation {
			t.Fatalf("the rebuilt ledger's log from its start: %+v %v, want %v", fresh, err, more)
		}
	})
}

// A round's links are published in one call; a lapsed grant among them is fenced alone.
func TestReadyPublishesARound(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 10})
		var seq uint64
		enqueue(t, l, "a", 3, &seq)
		grants, err := l.Admit(ctx, 3)
		if err != nil || len(grants) != 3 {
			t.Fatalf("admit: %v %v", grants, err)
		}
		stale := grants[1]
		stale.Epoch-- // another grant's epoch: as if this one lapsed and was granted again
		links := []admission.Link{{Grant: grants[0], URL: "u0"}, {Grant: stale, URL: "u1"}, {Grant: grants[2], URL: "u2"}}
		for i := range links {
			links[i].Expires = grants[0].Ticket.Created.Add(3600e9)
		}
		errs, err := l.Ready(ctx, links)
		if err != nil || errs[0] != nil || errs[1] != admission.ErrFenced || errs[2] != nil {
			t.Fatalf("ready: %v %v", errs, err)
		}
		st, _ := l.Statuses(ctx, []string{grants[0].Ticket.ID, grants[1].Ticket.ID, grants[2].Ticket.ID})
		if st[0] != admission.StatusReady || st[1] != admission.StatusAdmitting || st[2] != admission.StatusReady {
			t.Fatalf("statuses after ready: %v", st)
		}
	})
}
