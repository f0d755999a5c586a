package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// bigSize is past 2^32, so that the covered set's numbers are checked where a float's
// default formatting would turn them into exponents.
const bigSize int64 = 6<<30 + 5

// grantBig enqueues and admits one ticket of bigSize, link published.
func grantBig(t *testing.T, l *admission.Ledger, id string) admission.Grant {
	t.Helper()
	ctx := t.Context()
	if _, err := l.Enqueue(ctx, admission.Ticket{ID: id, Object: "o", ETag: "e", Size: bigSize, Tenant: "public", Seq: 1, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	grants, err := l.Admit(ctx, 1)
	if err != nil || len(grants) != 1 {
		t.Fatalf("admit: %v %v", grants, err)
	}
	if err := l.MarkReady(ctx, grants[0], "u", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return grants[0]
}

// conn is one connection of g's link sending the given ranges of the object.
func conn(g admission.Grant, name string, parts ...admission.Span) admission.Stream {
	return admission.Stream{Ticket: g.Ticket.ID, Conn: name, Epoch: g.Epoch, Tenant: "public", Object: "o", ETag: "e",
		Size: bigSize, Offset: parts[0].Start, Parts: parts}
}

// send runs one connection: begin, a renewal at half of sent, and the end.
func send(t *testing.T, l *admission.Ledger, s admission.Stream, sent int64) {
	t.Helper()
	ctx := t.Context()
	if err := l.BeginStream(ctx, s); err != nil {
		t.Fatalf("begin %s: %v", s.Conn, err)
	}
	if err := l.RenewStream(ctx, s, sent/2, sent/2); err != nil {
		t.Fatalf("renew %s: %v", s.Conn, err)
	}
	if err := l.RenewStream(ctx, s, 0, sent/2); err != nil { // a renewal with nothing new
		t.Fatalf("renew %s: %v", s.Conn, err)
	}
	if err := l.EndStream(ctx, s, sent-sent/2, sent); err != nil {
		t.Fatalf("end %s: %v", s.Conn, err)
	}
}

func covered(t *testing.T, l *admission.Ledger, id string) admission.Ticket {
	t.Helper()
	p, err := l.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p.Ticket
}

// A download manager re-requesting ranges sends more than the object's size long
// before every byte went out: the ticket stays streaming, its link keeps answering,
// and it is done only once every byte was sent at least once.
func TestDoneIsCoverageNotASum(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		g := grantBig(t, l, "cover")
		half, quarter := bigSize/2, bigSize/4

		send(t, l, conn(g, "a", admission.Span{Start: 0, Length: bigSize}), half) // cut half-way
		send(t, l, conn(g, "b", admission.Span{Start: 0, Length: bigSize}), half) // the same again
		send(t, l, conn(g, "c", admission.Span{Start: quarter, Length: bigSize - quarter}), half)
		tk := covered(t, l, g.Ticket.ID)
		if tk.BytesSent < bigSize {
			t.Fatalf("sent %d, the test wants more than the size %d", tk.BytesSent, bigSize)
		}
		if tk.Status != admission.StatusStreaming || tk.BytesCovered != quarter+half {
			t.Fatalf("after overlapping ranges summing to %d: %s with %d covered, want streaming with %d",
				tk.BytesSent, tk.Status, tk.BytesCovered, quarter+half)
		}

		// Two ranges of one multipart response: the first whole, 5 bytes of the second.
		last := bigSize - 10
		send(t, l, conn(g, "d", admission.Span{Start: quarter + half, Length: 10}, admission.Span{Start: last, Length: 10}), 15)
		if tk := covered(t, l, g.Ticket.ID); tk.Status != admission.StatusStreaming || tk.BytesCovered != quarter+half+15 {
			t.Fatalf("after a multipart response: %s with %d covered, want streaming with %d", tk.Status, tk.BytesCovered, quarter+half+15)
		}

		// The rest, in a range that overlaps both ends of the hole: done, slot freed.
		send(t, l, conn(g, "e", admission.Span{Start: half, Length: bigSize - half}), bigSize-half)
		tk = covered(t, l, g.Ticket.ID)
		if tk.Status != admission.StatusDone || tk.BytesCovered != bigSize {
			t.Fatalf("after every byte: %s with %d of %d covered, want done", tk.Status, tk.BytesCovered, bigSize)
		}
		if st, err := l.Stats(t.Context()); err != nil || st.InUse != 0 {
			t.Fatalf("slots in use after done: %d (%v)", st.InUse, err)
		}
	})
}

// The covered set is bounded: ranges that would add an interval past the cap are left
// out (never counted as sent), and once they merge the download still ends done.
func TestCoverageIsBounded(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		g := grantBig(t, l, "holes")
		for i := range 100 { // 100 one-byte ranges with holes between them
			send(t, l, conn(g, "h", admission.Span{Start: int64(1000 * i), Length: 1}), 1)
		}
		tk := covered(t, l, g.Ticket.ID)
		if tk.Status != admission.StatusStreaming || tk.BytesCovered != 64 {
			t.Fatalf("after 100 disjoint bytes: %s with %d covered, want streaming with 64 (the cap)", tk.Status, tk.BytesCovered)
		}
		send(t, l, conn(g, "all", admission.Span{Start: 0, Length: bigSize}), bigSize)
		if tk := covered(t, l, g.Ticket.ID); tk.Status != admission.StatusDone || tk.BytesCovered != bigSize {
			t.Fatalf("after the whole object: %s with %d covered, want done", tk.Status, tk.BytesCovered)
		}
	})
}

// A slot reclaimed after the resume grace ends the ticket done only if it was covered:
// a sum past the size with a hole left is expired.
func TestReclaimJudgesByCoverage(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, ResumeGrace: 100 * time.Millisecond})
		g := grantBig(t, l, "hole")
		for _, c := range []string{"a", "b", "c"} {
			send(t, l, conn(g, c, admission.Span{Start: 0, Length: bigSize}), bigSize/2)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := l.Admit(t.Context(), 1); err != nil { // runs reclaim
			t.Fatal(err)
		}
		if tk := covered(t, l, g.Ticket.ID); tk.Status != admission.StatusExpired {
			t.Fatalf("reclaimed with %d sent, %d of %d covered: %s, want expired", tk.BytesSent, tk.BytesCovered, bigSize, tk.Status)
		}
	})
}

// After the ledger is lost its covered set is unknown: a stream re-registering counts
// the bytes before its first range as the client's and adds its own.
func TestReRegistrationCoversTheResumedPrefix(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 2})
		g := grantBig(t, l, "resumed")
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		s := conn(g, "r", admission.Span{Start: bigSize / 3, Length: bigSize - bigSize/3})
		send(t, l, s, bigSize-bigSize/3)
		if tk := covered(t, l, g.Ticket.ID); tk.Status != admission.StatusDone || tk.BytesCovered != bigSize {
			t.Fatalf("resumed stream after a wipe: %s with %d of %d covered, want done", tk.Status, tk.BytesCovered, bigSize)
		}
	})
}
