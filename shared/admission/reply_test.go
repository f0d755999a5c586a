package admission_test

import (
	"errors"
	"testing"

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
