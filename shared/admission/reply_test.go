package admission_test

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/redisreply"
)

// A ticket whose entry in Redis holds a field of the wrong form (a script or a
// person wrote it) is an error naming the field when read, not a ticket of size 0
// that a client would be told is done.
func TestMistypedTicketEntryIsAnError(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{})
		var seq uint64
		id := enqueue(t, l, "public", 1, &seq)[0]
		if _, err := l.Get(ctx, id); err != nil {
			t.Fatalf("a well-formed entry: %v", err)
		}
		if err := rdb.HSet(ctx, "sluice:{adm}:t:"+id, "size", "ten").Err(); err != nil {
			t.Fatal(err)
		}
		_, err := l.Get(ctx, id)
		if !errors.Is(err, redisreply.ErrShape) || errors.Is(err, admission.ErrUnavailable) {
			t.Fatalf("read a ticket whose size is %q: %v, want a shape error (not an outage)", "ten", err)
		}
	})
}

// shapeError fails t unless err is a shape error (not an outage) whose message says
// want.
func shapeError(t *testing.T, what string, err error, want string) {
	t.Helper()
	if !errors.Is(err, redisreply.ErrShape) || errors.Is(err, admission.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v, want a shape error (not an outage) saying %q", what, err, want)
	}
}

// A ticket already recorded answers enqueue (and cancel) with its status; one the
// ledger does not know is an error naming it, not a ticket taken as created (or not).
func TestUnknownStatusIsAnError(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{})
		var seq uint64
		id := enqueue(t, l, "public", 1, &seq)[0]
		tk := admission.Ticket{ID: id, Object: "o", ETag: "e", Size: 10, Tenant: "public", Seq: seq, Created: time.Now()}
		if created, err := l.Enqueue(ctx, tk); err != nil || created {
			t.Fatalf("enqueue a ticket again: created=%v %v, want false and no error", created, err)
		}
		if p, err := l.Accept(ctx, tk); err != nil || p.ID != id {
			t.Fatalf("accept a ticket recorded before: %+v %v", p, err)
		}
		if err := rdb.HSet(ctx, "sluice:{adm}:t:"+id, "status", "lost").Err(); err != nil {
			t.Fatal(err)
		}
		_, err := l.Enqueue(ctx, tk)
		shapeError(t, "enqueue a ticket whose status is lost", err, `got "lost"`)
		_, err = l.Accept(ctx, tk)
		shapeError(t, "accept a ticket whose status is lost", err, `got "lost"`)
		_, err = l.Cancel(ctx, id)
		shapeError(t, "cancel a ticket whose status is lost", err, `cancel reply: want one of queued`)
	})
}

// An entry of the ended tickets' log without the ticket's id is read past as a gap
// (so that the reader checks every ticket it holds, which settles whatever it named)
// and logged naming the entry: neither a ticket silently skipped (whose message a
// worker would then hold on to) nor a log that can no longer be read past it.
func TestEndLogEntryWithoutIDIsAGap(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		var logged bytes.Buffer
		l := newLedger(t, rdb, admission.Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		cursor, _, err := l.EndLogTail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		entry, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "sluice:{adm}:endlog", Values: []any{"ticket", "t1"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		good, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "sluice:{adm}:endlog", Values: []any{"id", "t2"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		log, err := l.EndedSince(ctx, cursor, 10)
		if err != nil || !log.Gap || !slices.Equal(log.IDs, []string{"t2"}) || log.Next != good {
			t.Fatalf("read past an entry without an id: %+v %v, want a gap, t2, and the cursor at its entry", log, err)
		}
		if !strings.Contains(logged.String(), "["+entry+"].id: missing") {
			t.Errorf("the entry is not named in the log: %s", logged.String())
		}
		if _, err := l.EndedSince(ctx, "yesterday", 10); err == nil || errors.Is(err, admission.ErrUnavailable) {
			t.Fatalf("read the log after a cursor that is no stream id: %v, want an error (not an outage)", err)
		}
	})
}

// A limit an earlier version kept in Redis that does not parse is left at its default
// and named in a warning, while the others are imported and admission goes on (failing
// the rebuild for it would stop all admission); read at run time, a rate that does not
// parse is an error naming the field.
func TestUnparsableRedisLimitsAreLeftBehind(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		var logged bytes.Buffer
		l := newLedger(t, rdb, admission.Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		rdb.FlushAll(ctx) // a ledger with no record yet, left by the earlier version
		rdb.HSet(ctx, "sluice:{adm}:limits", "global", 3, "weight:acme", "heavy")
		if _, err := l.Rebuild(ctx); err != nil {
			t.Fatalf("rebuild with a weight of heavy: %v", err)
		}
		if lim, err := l.Limits(ctx); err != nil || lim.Global != 3 || lim.Tenants["acme"].Weight != nil {
			t.Errorf("limits imported: %+v %v, want the global limit and no weight", lim, err)
		}
		if !strings.Contains(logged.String(), `weight:acme: want a number, got \"heavy\"`) {
			t.Errorf("the warning does not name the field: %s", logged.String())
		}
		rdb.HSet(ctx, "sluice:{adm}:limits", "rate:acme", "fast")
		_, err := l.TenantRate(ctx, "acme")
		_, err = l.TenantRate(ctx, "acme")
		shapeError(t, "read a rate of fast", err, `.rate:acme: want an integer, got "fast"`)
	})
}
