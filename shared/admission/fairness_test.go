package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// admitOne admits a single ticket and completes it at once (a slot frees immediately),
// returning the admitted ticket's tenant.
func admitAndFinish(t *testing.T, l *admission.Ledger) string {
	t.Helper()
	ctx := t.Context()
	grants, err := l.Admit(ctx, 1)
	if err != nil || len(grants) != 1 {
		t.Fatalf("admit: %v %v", grants, err)
	}
	g := grants[0]
	if err := l.MarkReady(ctx, g, "u", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := l.BeginStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch)); err != nil {
		t.Fatal(err)
	}
	if err := l.EndStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch), 10, 10); err != nil {
		t.Fatal(err)
	}
	p, _ := l.Get(ctx, g.Ticket.ID)
	return p.Tenant
}

// Tenant A floods 1,000 tickets; tenant B then sends 10. With equal weights B's tickets
// alternate with A's, so all 10 are admitted within 20 admissions — while A's backlog
// (980+ tickets) is still waiting.
func TestFairnessFloodDoesNotStarve(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		var seq uint64
		enqueue(t, l, "a", 1000, &seq)
		// A few of A's tickets are admitted before B shows up.
		for range 5 {
			admitAndFinish(t, l)
		}
		bIDs := enqueue(t, l, "b", 10, &seq)
		// Before any admission, B's last ticket knows it is about 2*10 admissions away.
		p, err := l.Poll(t.Context(), bIDs[9])
		if err != nil || p.Ahead > 20 || p.Ahead < 18 {
			t.Fatalf("position of B's 10th ticket: %d (%v), want about 19", p.Ahead, err)
		}
		const bound = 20
		bAdmitted := 0
		for i := 1; i <= bound && bAdmitted < 10; i++ {
			if admitAndFinish(t, l) == "b" {
				bAdmitted++
			}
		}
		if bAdmitted != 10 {
			t.Fatalf("only %d of B's 10 tickets admitted within %d admissions", bAdmitted, bound)
		}
		st, _ := l.Stats(t.Context())
		if st.Tenants["a"].Queued < 970 {
			t.Fatalf("A's backlog should still be waiting, has %d", st.Tenants["a"].Queued)
		}
	})
}

// A tenant with weight 2 gets twice the admissions of weight 1 while both wait.
func TestFairnessWeights(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		two := 2.0
		if _, err := l.SetLimits(t.Context(), admission.LimitsUpdate{Tenants: map[string]admission.TenantLimits{"gold": {Weight: &two}}}); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		enqueue(t, l, "gold", 100, &seq)
		enqueue(t, l, "free", 100, &seq)
		counts := map[string]int{}
		for range 60 {
			counts[admitAndFinish(t, l)]++
		}
		if counts["gold"] != 40 || counts["free"] != 20 {
			t.Fatalf("60 admissions split %v, want gold 40 and free 20", counts)
		}
	})
}

// Per-tenant limits, pause and the admissible backlog.
func TestTenantLimitPauseAndAdmissible(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 5})
		one := 1
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Tenants: map[string]admission.TenantLimits{"small": {Limit: &one}}}); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		enqueue(t, l, "small", 4, &seq)
		enqueue(t, l, "big", 2, &seq)
		st, _ := l.Stats(ctx)
		if st.Backlog != 6 || st.Admissible != 3 {
			t.Fatalf("backlog %d admissible %d, want 6 and 3 (small can take 1, big 2)", st.Backlog, st.Admissible)
		}
		if err := l.SetPaused(ctx, true); err != nil {
			t.Fatal(err)
		}
		if g, _ := l.Admit(ctx, 10); len(g) != 0 {
			t.Fatalf("admitted %d while paused", len(g))
		}
		if st, _ := l.Stats(ctx); !st.Paused || st.Admissible != 0 {
			t.Fatalf("paused stats: %+v", st)
		}
		_ = l.SetPaused(ctx, false)
		grants, _ := l.Admit(ctx, 10)
		if len(grants) != 3 {
			t.Fatalf("admitted %d, want 3 (tenant limit 1 for small, 2 waiting in big)", len(grants))
		}
		five := 0
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Global: &five}); err != nil {
			t.Fatal(err)
		}
		bad := -1
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Global: &bad}); err == nil {
			t.Fatal("a negative limit was accepted")
		}
	})
}

// A queued ticket whose client stopped polling is dropped before it is admitted and
// does not hold up the ticket behind it.
func TestAbandonedTicketsAreDropped(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AbandonAfter: 300 * time.Millisecond})
		var seq uint64
		ids := enqueue(t, l, "public", 2, &seq)
		time.Sleep(400 * time.Millisecond)
		if _, err := l.Poll(ctx, ids[1]); err != nil { // only the second client is still there
			t.Fatal(err)
		}
		grants, _ := l.Admit(ctx, 1)
		if len(grants) != 1 || grants[0].Ticket.ID != ids[1] {
			t.Fatalf("admitted %v, want the polled ticket %s", grants, ids[1])
		}
		if p, _ := l.Get(ctx, ids[0]); p.Status != admission.StatusExpired {
			t.Fatalf("abandoned ticket is %s", p.Status)
		}
	})
}

// A grant that lapses (its worker died before publishing the link) puts the ticket
// back in line as polled when it was admitted, not when it was queued: a client that
// kept polling while it waited is not taken for gone. (A waiting ticket's poll is
// recorded in `polls` only; the grant carries it into the ticket.)
func TestALapsedGrantKeepsTheClientsLastPoll(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const abandon = 600 * time.Millisecond
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AbandonAfter: abandon, AdmitLease: 50 * time.Millisecond})
		var seq uint64
		id := enqueue(t, l, "public", 1, &seq)[0]
		queued := time.Now()
		for time.Since(queued) < abandon+200*time.Millisecond { // waiting longer than the grace, polling
			if _, err := l.Poll(ctx, id); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if grants, err := l.Admit(ctx, 1); err != nil || len(grants) != 1 || grants[0].Ticket.ID != id {
			t.Fatalf("admitted %v (%v), want the polled ticket %s", grants, err, id)
		}
		time.Sleep(100 * time.Millisecond) // the grant's lease lapses: no link was published
		if grants, err := l.Admit(ctx, 1); err != nil || len(grants) != 1 || grants[0].Ticket.ID != id {
			p, _ := l.Get(ctx, id)
			t.Fatalf("after the lapsed grant: admitted %v (%v), ticket %s (%s); want it admitted again", grants, err, p.Status, p.Error)
		}
	})
}

// A waiting ticket's poll writes last_poll_ms (what a worker of the previous version
// judges abandonment by) once half the grace has passed since it was last written,
// not on every poll: through a rolling upgrade an old worker never takes a polled
// ticket for gone.
func TestPollsRefreshLastPollForOldWorkers(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const abandon = 600 * time.Millisecond
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AbandonAfter: abandon})
		var seq uint64
		id := enqueue(t, l, "public", 1, &seq)[0]
		lastPoll := func() int64 { n, _ := rdb.HGet(ctx, "sluice:{adm}:t:"+id, "last_poll_ms").Int64(); return n }
		queued := lastPoll()
		if _, err := l.Poll(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got := lastPoll(); got != queued {
			t.Fatalf("a poll right after the ticket was queued wrote last_poll_ms (%d, was %d)", got, queued)
		}
		time.Sleep(abandon/2 + 50*time.Millisecond)
		if _, err := l.Poll(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got := lastPoll(); got < queued+(abandon/2).Milliseconds() {
			t.Fatalf("past half the grace, a poll left last_poll_ms at %d (queued at %d)", got, queued)
		}
	})
}

// An abandoned ticket leaves the queue when its grace lapses, not when it reaches the
// head: with every slot taken, the ticket behind it moves up at once.
func TestAbandonedTicketsLeaveBeforeTheHead(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AbandonAfter: 300 * time.Millisecond})
		var seq uint64
		holder := enqueue(t, l, "public", 1, &seq)
		if grants, _ := l.Admit(ctx, 1); len(grants) != 1 || grants[0].Ticket.ID != holder[0] {
			t.Fatalf("admitted %v, want %s", grants, holder[0])
		}
		ids := enqueue(t, l, "public", 2, &seq)
		if p, _ := l.Poll(ctx, ids[1]); p.Ahead != 1 {
			t.Fatalf("second in line has %d ahead, want 1", p.Ahead)
		}
		time.Sleep(400 * time.Millisecond)
		if _, err := l.Poll(ctx, ids[1]); err != nil { // only the second client is still there
			t.Fatal(err)
		}
		if grants, _ := l.Admit(ctx, 1); len(grants) != 0 {
			t.Fatalf("admitted %v while the only slot is held", grants)
		}
		if p, _ := l.Get(ctx, ids[0]); p.Status != admission.StatusExpired {
			t.Fatalf("abandoned ticket is %s with the slot still held, want expired", p.Status)
		}
		if p, _ := l.Poll(ctx, ids[1]); p.Status != admission.StatusQueued || p.Ahead != 0 {
			t.Fatalf("the ticket behind the abandoned one: %s with %d ahead, want queued at the front", p.Status, p.Ahead)
		}
		// Polling keeps a ticket: past the grace since it was queued, but not since its
		// last poll, it stays.
		time.Sleep(200 * time.Millisecond)
		l.Poll(ctx, ids[1])
		time.Sleep(200 * time.Millisecond)
		l.Admit(ctx, 1)
		if p, _ := l.Get(ctx, ids[1]); p.Status != admission.StatusQueued {
			t.Fatalf("a polled ticket is %s, want queued", p.Status)
		}
	})
}
