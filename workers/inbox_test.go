package workers

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The inbox holds at most its bound: a put past it waits for a take, so the consumer
// pulls no further ahead than a receiver taking one message at a time would let it;
// close releases a waiting put.
func TestInboxIsBounded(t *testing.T) {
	delivered := time.Unix(1_700_000_000, 0)
	in := newInbox(2, func() time.Time { return delivered })
	var msg jetstream.Msg // never acknowledged here: the inbox only passes it on
	in.put(msg)
	in.put(msg)
	third := make(chan struct{})
	go func() {
		in.put(msg)
		close(third)
	}()
	select {
	case <-third:
		t.Fatal("a put past the bound did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	group, ok := in.take(10)
	if !ok || len(group) != 2 || !group[0].at.Equal(delivered) {
		t.Fatalf("take: %d messages (%v), want the 2 held, stamped when delivered", len(group), ok)
	}
	select {
	case <-third:
	case <-time.After(10 * time.Second):
		t.Fatal("a take did not release the waiting put")
	}
	if group, ok := in.take(10); !ok || len(group) != 1 {
		t.Fatalf("take: %d messages (%v), want the third", len(group), ok)
	}
	in.close()
	if _, ok := in.take(10); ok {
		t.Fatal("take on a closed, empty inbox answered")
	}
}
