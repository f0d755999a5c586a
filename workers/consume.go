package workers

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consume delivers c's messages to handle, with up to buffered of them pulled ahead.
// Consumer errors are logged, except the missed heartbeats a pull reports while the
// connection reconnects (the client pulls again by itself).
func consume(c MessageSource, handle jetstream.MessageHandler, buffered int, log *slog.Logger) (jetstream.ConsumeContext, error) {
	return c.Consume(handle,
		jetstream.PullMaxMessages(buffered),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				log.Warn("consume", "err", err)
			}
		}))
}

// stopConsuming stops the pulls and hands what the client had buffered to the
// handler, which gives it back (Stop would leave those messages to their AckWait);
// a drain that has not finished within 5 s is cut.
func stopConsuming(cc jetstream.ConsumeContext) {
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
		cc.Stop()
	}
}

// inbox hands the messages the consumer delivers, one handler call at a time, to a
// receiver that takes them in groups: whatever arrived while it worked on the last.
// It holds at most max messages: past it the handler waits, as it waited on a receiver
// that took one message at a time, so the client pulls no further ahead than before.
type inbox struct {
	max int
	now func() time.Time

	mu     sync.Mutex
	cond   *sync.Cond // signals a put, a take or the close
	msgs   []delivery
	closed bool
}

// delivery is a message and when it was delivered: its AckWait runs from then.
type delivery struct {
	msg jetstream.Msg
	at  time.Time
}

func newInbox(max int, now func() time.Time) *inbox {
	in := &inbox{max: max, now: now}
	in.cond = sync.NewCond(&in.mu)
	return in
}

// put is the consumer's handler. A message that comes after close is handed back at
// once: nobody is left to receive it.
func (in *inbox) put(msg jetstream.Msg) {
	at := in.now()
	in.mu.Lock()
	for len(in.msgs) >= in.max && !in.closed {
		in.cond.Wait()
	}
	if in.closed {
		in.mu.Unlock()
		_ = msg.Nak()
		return
	}
	in.msgs = append(in.msgs, delivery{msg, at})
	in.cond.Broadcast()
	in.mu.Unlock()
}

// take waits for messages and returns up to max of them, oldest first; false once the
// inbox is closed and empty.
func (in *inbox) take(max int) ([]delivery, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for len(in.msgs) == 0 && !in.closed {
		in.cond.Wait()
	}
	n := min(len(in.msgs), max)
	if n == 0 {
		return nil, false
	}
	group := slices.Clone(in.msgs[:n])
	in.msgs = in.msgs[n:]
	if len(in.msgs) == 0 {
		in.msgs = nil // let the backing array go after a burst
	}
	in.cond.Broadcast()
	return group, true
}

// close ends the inbox once what it holds is taken, and releases a waiting put.
func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.cond.Broadcast()
	in.mu.Unlock()
}
