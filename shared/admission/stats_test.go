package admission_test

import (
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// TestStatsCountTicketsByState: the snapshot operators and metrics read says how many
// tickets are in each live state and how many ever ended in each final one.
func TestStatsCountTicketsByState(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 3})
		var seq uint64
		ids := enqueue(t, l, "acme", 5, &seq)
		grants, err := l.Admit(ctx, 10)
		if err != nil || len(grants) != 3 {
			t.Fatalf("admit: %v %v", grants, err)
		}
		// one ready, one streaming, one still admitting; then one done and one canceled
		for _, g := range grants[:2] {
			if err := l.MarkReady(ctx, g, "u", time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.BeginStream(ctx, stream(grants[1].Ticket.ID, "c1", grants[1].Epoch)); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Cancel(ctx, ids[4]); err != nil {
			t.Fatal(err)
		}
		st, err := l.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[admission.Status]int64{"queued": 1, "admitting": 1, "ready": 1, "streaming": 1}
		if !maps.Equal(st.Tickets, want) {
			t.Errorf("tickets by state = %v, want %v", st.Tickets, want)
		}
		if err := l.EndStream(ctx, stream(grants[1].Ticket.ID, "c1", grants[1].Epoch), 10, 10); err != nil {
			t.Fatal(err)
		}
		st, _ = l.Stats(ctx)
		wantEnded := map[admission.Status]int64{"done": 1, "canceled": 1, "expired": 0, "failed": 0}
		if !maps.Equal(st.Ended, wantEnded) {
			t.Errorf("ended = %v, want %v", st.Ended, wantEnded)
		}
		if st.Tickets["streaming"] != 0 || st.Tickets["ready"] != 1 {
			t.Errorf("after the download ended: %v", st.Tickets)
		}
	})
}

// SharedStats: one computation serves every caller for OrderMaxAge (the figures may be
// that old), and writing the limits drops it, so a pause shows at once.
func TestSharedStatsAreComputedOncePerMaxAge(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 3, OrderMaxAge: time.Hour})
		var seq uint64
		enqueue(t, l, "acme", 2, &seq)
		first, err := l.SharedStats(ctx)
		if err != nil || first.Backlog != 2 {
			t.Fatalf("first shared stats: %+v %v, want a backlog of 2", first, err)
		}
		enqueue(t, l, "acme", 1, &seq)
		again, err := l.SharedStats(ctx)
		if err != nil || !maps.Equal(again.Tenants, first.Tenants) || again.Backlog != 2 {
			t.Fatalf("within the max age: %+v %v, want the same snapshot (backlog 2)", again, err)
		}
		if exact, _ := l.Stats(ctx); exact.Backlog != 3 {
			t.Fatalf("exact stats: backlog %d, want 3", exact.Backlog)
		}
		if err := l.SetPaused(ctx, true); err != nil {
			t.Fatal(err)
		}
		paused, err := l.SharedStats(ctx)
		if err != nil || !paused.Paused || paused.Backlog != 3 {
			t.Fatalf("after a pause: %+v %v, want paused with a backlog of 3", paused, err)
		}
	})
}
