package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// A download manager that lost a connection asks for its range again after the
// ticket ended done (every byte had been written to a socket): within the resume grace
// the link works again, taking a slot under the limit; after it, 410 as before.
func TestDoneTicketReopensWithinTheResumeGrace(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const grace = 400 * time.Millisecond
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, ResumeGrace: grace, StreamLease: 5 * time.Second})
		var seq uint64
		ids := enqueue(t, l, "t", 1, &seq)
		g, err := l.Admit(ctx, 1)
		if err != nil || len(g) != 1 {
			t.Fatalf("admit: %v %v", g, err)
		}
		if err := l.MarkReady(ctx, g[0], "u", time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		whole := stream(ids[0], "c1", g[0].Epoch)
		if err := l.BeginStream(ctx, whole); err != nil {
			t.Fatal(err)
		}
		if err := l.EndStream(ctx, whole, 10, 10); err != nil {
			t.Fatal(err)
		}
		if p, _ := l.Get(ctx, ids[0]); p.Status != admission.StatusDone {
			t.Fatalf("after the whole object: %s", p.Status)
		}
		again := stream(ids[0], "c2", g[0].Epoch)
		again.Offset = 4
		if err := l.BeginStream(ctx, again); err != nil {
			t.Fatalf("re-request within the grace: %v, want the link to work", err)
		}
		if st, _ := l.Stats(ctx); st.InUse != 1 {
			t.Fatalf("slots in use %d, want 1 while the range is re-sent", st.InUse)
		}
		if err := l.EndStream(ctx, again, 6, 6); err != nil {
			t.Fatal(err)
		}
		if p, _ := l.Get(ctx, ids[0]); p.Status != admission.StatusDone {
			t.Fatalf("after the re-sent range: %s", p.Status)
		}
		time.Sleep(2 * grace)
		if err := l.BeginStream(ctx, stream(ids[0], "c3", g[0].Epoch)); err != admission.ErrSlotNotHeld {
			t.Fatalf("after the grace: %v, want ErrSlotNotHeld", err)
		}
	})
}
