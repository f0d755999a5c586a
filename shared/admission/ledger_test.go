package admission_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
)

// backends runs a test against a real redis-server and against the in-process
// Redis-protocol server the all-in-one embeds, since the ledger must work on both.
func backends(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient)) {
	t.Run("redis-server", func(t *testing.T) {
		fn(t, testenv.StartRedis(t).Client(t))
	})
	t.Run("embedded", func(t *testing.T) {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		fn(t, rdb)
	})
}

// newLedger is a ledger over rdb with its records in a JetStream of its own.
func newLedger(t *testing.T, rdb redis.UniversalClient, cfg admission.Config) *admission.Ledger {
	t.Helper()
	js := testenv.StartNATS(t).JetStream(t)
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{queue.SettingsBucket, &cfg.Records}, {queue.IdempotencyBucket, &cfg.Bindings}, {queue.EndedBucket, &cfg.Ended}} {
		kv, err := queue.EnsureRecords(t.Context(), js, queue.RecordConfig{Bucket: b.name})
		if err != nil {
			t.Fatal(err)
		}
		*b.kv = kv
	}
	l := admission.New(rdb, cfg)
	if _, err := l.Rebuild(t.Context()); err != nil {
		t.Fatal(err)
	}
	return l
}

// stream names one connection of a granted ticket as the edge would.
func stream(ticket, conn string, epoch int64) admission.Stream {
	return admission.Stream{Ticket: ticket, Conn: conn, Epoch: epoch, Tenant: "t", Object: "o", ETag: "e", Size: 10}
}

func enqueue(t *testing.T, l *admission.Ledger, tenant string, n int, seq *uint64) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		*seq++
		id := fmt.Sprintf("%s-%04d", tenant, *seq)
		created, err := l.Enqueue(t.Context(), admission.Ticket{ID: id, Object: "o", ETag: "e", Size: 10, Tenant: tenant, Seq: *seq, Created: time.Now()})
		if err != nil || !created {
			t.Fatalf("enqueue %s: created=%v err=%v", id, created, err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestLedgerLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 2})
		var seq uint64
		ids := enqueue(t, l, "public", 3, &seq)

		// Enqueue again (a redelivery): no second ticket, nothing changes.
		if created, err := l.Enqueue(ctx, admission.Ticket{ID: ids[0], Tenant: "public", Seq: 1}); err != nil || created {
			t.Fatalf("re-enqueue: created=%v err=%v", created, err)
		}
		grants, err := l.Admit(ctx, 10)
		if err != nil || len(grants) != 2 || grants[0].Ticket.ID != ids[0] || grants[1].Ticket.ID != ids[1] {
			t.Fatalf("admit under limit 2: %v %v", grants, err)
		}
		if more, _ := l.Admit(ctx, 10); len(more) != 0 {
			t.Fatalf("admitted past the limit: %v", more)
		}
		p, err := l.Poll(ctx, ids[2])
		if err != nil || p.Status != admission.StatusQueued || p.Ahead != 0 {
			t.Fatalf("third ticket: %+v %v", p, err)
		}
		g := grants[0]
		if err := l.MarkReady(ctx, g, "http://edge/d/x", time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := l.MarkReady(ctx, admission.Grant{Ticket: admission.Ticket{ID: g.Ticket.ID}, Epoch: g.Epoch + 100}, "u", time.Now()); err != admission.ErrFenced {
			t.Fatalf("stale epoch must be fenced, got %v", err)
		}
		if err := l.BeginStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch+1)); err != admission.ErrSlotNotHeld {
			t.Fatalf("begin with wrong epoch: %v", err)
		}
		if err := l.BeginStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch)); err != nil {
			t.Fatal(err)
		}
		if err := l.RenewStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch), 4, 4); err != nil {
			t.Fatal(err)
		}
		if err := l.EndStream(ctx, stream(g.Ticket.ID, "c1", g.Epoch), 6, 10); err != nil {
			t.Fatal(err)
		}
		p, _ = l.Get(ctx, g.Ticket.ID)
		if p.Status != admission.StatusDone || p.BytesSent != 10 {
			t.Fatalf("after the whole object: %+v", p.Ticket)
		}
		// The freed slot goes to the third ticket.
		grants, _ = l.Admit(ctx, 10)
		if len(grants) != 1 || grants[0].Ticket.ID != ids[2] {
			t.Fatalf("freed slot not reused: %v", grants)
		}
		if st, err := l.Cancel(ctx, ids[1]); err != nil || st != admission.StatusAdmitting {
			t.Fatalf("cancel: %v %v", st, err)
		}
		if _, err := l.Cancel(ctx, "nope"); err != admission.ErrNotFound {
			t.Fatalf("cancel unknown: %v", err)
		}
	})
}

func TestLedgerReclaimsLapsedGrants(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AdmitLease: 50 * time.Millisecond})
		var seq uint64
		ids := enqueue(t, l, "public", 2, &seq)
		grants, _ := l.Admit(ctx, 1)
		time.Sleep(120 * time.Millisecond)
		// The admitting worker "paused": its grant lapsed, the ticket is back at the front.
		if err := l.MarkReady(ctx, grants[0], "u", time.Now().Add(time.Minute)); err != admission.ErrFenced {
			t.Fatalf("lapsed grant must be fenced, got %v", err)
		}
		again, _ := l.Admit(ctx, 1)
		if len(again) != 1 || again[0].Ticket.ID != ids[0] || again[0].Epoch <= grants[0].Epoch {
			t.Fatalf("lapsed ticket not re-admitted first with a new epoch: %v (was %v)", again, grants)
		}
	})
}

// Each connection of a download is a lease: past the per-token cap a new one is
// refused; the connections of an edge that died (no more renewals) lapse after two
// thirds of the slot's lease, so the client can resume on another edge before the slot
// itself lapses, and its new connections keep the slot.
func TestConnectionsAreLeases(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, MaxConns: 2, StreamLease: 1200 * time.Millisecond})
		var seq uint64
		ids := enqueue(t, l, "public", 2, &seq)
		grants, _ := l.Admit(ctx, 1)
		if len(grants) != 1 {
			t.Fatalf("admitted %v", grants)
		}
		g := grants[0]
		if err := l.MarkReady(ctx, g, "http://edge/d/x", time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"a1", "a2"} {
			if err := l.BeginStream(ctx, stream(g.Ticket.ID, c, g.Epoch)); err != nil {
				t.Fatalf("begin %s: %v", c, err)
			}
		}
		// a2's lease (and the slot's, which its begin extended) started before this.
		start := time.Now()
		if err := l.BeginStream(ctx, stream(g.Ticket.ID, "a3", g.Epoch)); err != admission.ErrTooManyConnections {
			t.Fatalf("a third connection with a cap of 2: %v, want ErrTooManyConnections", err)
		}
		// The edge holding a1 and a2 dies: nothing renews them. Between their lease
		// (800 ms) and the slot's (1200 ms) the client comes back on another edge.
		time.Sleep(time.Until(start.Add(1000 * time.Millisecond)))
		if err := l.BeginStream(ctx, stream(g.Ticket.ID, "b1", g.Epoch)); err != nil {
			t.Fatalf("resume after the dead edge's connections lapsed: %v", err)
		}
		if err := l.BeginStream(ctx, stream(g.Ticket.ID, "b2", g.Epoch)); err != nil {
			t.Fatalf("second resumed connection: %v", err)
		}
		// The new connections keep the slot past the old lease.
		for range 4 {
			time.Sleep(150 * time.Millisecond)
			for _, c := range []string{"b1", "b2"} {
				if err := l.RenewStream(ctx, stream(g.Ticket.ID, c, g.Epoch), 0, 0); err != nil {
					t.Fatalf("renew %s: %v", c, err)
				}
			}
		}
		if p, _ := l.Get(ctx, g.Ticket.ID); p.Status != admission.StatusStreaming || p.Conns != 2 {
			t.Fatalf("while resumed: %s with %d connections, want streaming with 2", p.Status, p.Conns)
		}
		// They end with every byte sent (b1 the first 4, b2 the rest): done, slot back at once.
		if err := l.EndStream(ctx, stream(g.Ticket.ID, "b1", g.Epoch), 4, 4); err != nil {
			t.Fatal(err)
		}
		b2 := stream(g.Ticket.ID, "b2", g.Epoch)
		b2.Offset = 4
		if err := l.EndStream(ctx, b2, 6, 6); err != nil {
			t.Fatal(err)
		}
		if p, _ := l.Get(ctx, g.Ticket.ID); p.Status != admission.StatusDone || p.Conns != 0 {
			t.Fatalf("after the last connection: %s with %d connections, want done with 0", p.Status, p.Conns)
		}
		if grants, _ := l.Admit(ctx, 1); len(grants) != 1 || grants[0].Ticket.ID != ids[1] {
			t.Fatalf("the slot did not come back: %v", grants)
		}
	})
}

// CheckStream (the edge's HEAD) answers as a new connection would, and changes
// nothing: held while ready or streaming under the grant's epoch, not held once the
// ticket is done or canceled or under another epoch.
func TestCheckStreamAnswersAsBeginWould(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 2})
		var seq uint64
		enqueue(t, l, "public", 2, &seq)
		grants, err := l.Admit(ctx, 2)
		if err != nil || len(grants) != 2 {
			t.Fatalf("admit: %v %v", grants, err)
		}
		for _, g := range grants {
			if err := l.MarkReady(ctx, g, "http://edge/d/x", time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		done, canceled := grants[0], grants[1]
		if err := l.CheckStream(ctx, stream(done.Ticket.ID, "", done.Epoch)); err != nil {
			t.Fatalf("ready ticket: %v, want held", err)
		}
		if err := l.CheckStream(ctx, stream(done.Ticket.ID, "", done.Epoch+1)); err != admission.ErrSlotNotHeld {
			t.Fatalf("other epoch: %v, want ErrSlotNotHeld", err)
		}
		if p, _ := l.Get(ctx, done.Ticket.ID); p.Status != admission.StatusReady || p.Conns != 0 {
			t.Fatalf("a check changed the ticket: %s with %d connections", p.Status, p.Conns)
		}
		if err := l.BeginStream(ctx, stream(done.Ticket.ID, "c1", done.Epoch)); err != nil {
			t.Fatal(err)
		}
		if err := l.CheckStream(ctx, stream(done.Ticket.ID, "", done.Epoch)); err != nil {
			t.Fatalf("streaming ticket: %v, want held", err)
		}
		if err := l.EndStream(ctx, stream(done.Ticket.ID, "c1", done.Epoch), 10, 10); err != nil {
			t.Fatal(err)
		}
		if err := l.CheckStream(ctx, stream(done.Ticket.ID, "", done.Epoch)); err != admission.ErrSlotNotHeld {
			t.Fatalf("done ticket: %v, want ErrSlotNotHeld", err)
		}
		if _, err := l.Cancel(ctx, canceled.Ticket.ID); err != nil {
			t.Fatal(err)
		}
		if err := l.CheckStream(ctx, stream(canceled.Ticket.ID, "", canceled.Epoch)); err != admission.ErrSlotNotHeld {
			t.Fatalf("canceled ticket: %v, want ErrSlotNotHeld", err)
		}
		if err := l.CheckStream(ctx, stream("never-was", "", done.Epoch)); err != admission.ErrSlotNotHeld {
			t.Fatalf("unknown ticket: %v, want ErrSlotNotHeld", err)
		}
	})
}
