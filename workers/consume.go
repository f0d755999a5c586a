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
// It is unbounded, as the messages are: the consumer's MaxAckPending bounds what is
// delivered and not yet acknowledged, and a worker holds every waiting ticket anyway.
type inbox struct {
	mu     sync.Mutex
	msgs   []jetstream.Msg
	ready  chan struct{} // a signal: msgs is not empty, or the inbox closed
	closed bool
}

func newInbox() *inbox { return &inbox{ready: make(chan struct{}, 1)} }

// put is the consumer's handler. A message that comes after close is handed back at
// once: nobody is left to receive it.
func (in *inbox) put(msg jetstream.Msg) {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		_ = msg.Nak()
		return
	}
	in.msgs = append(in.msgs, msg)
	in.mu.Unlock()
	in.signal()
}

func (in *inbox) signal() {
	select {
	case in.ready <- struct{}{}:
	default: // one is already waiting
	}
}

// take waits for messages and returns up to max of them, oldest first; false once the
// inbox is closed and empty.
func (in *inbox) take(max int) ([]jetstream.Msg, bool) {
	for {
		in.mu.Lock()
		if n := min(len(in.msgs), max); n > 0 {
			group := slices.Clone(in.msgs[:n])
			in.msgs = in.msgs[n:]
			if len(in.msgs) == 0 {
				in.msgs = nil // let the backing array go after a burst
			} else {
				in.signal()
			}
			in.mu.Unlock()
			return group, true
		}
		closed := in.closed
		in.mu.Unlock()
		if closed {
			return nil, false
		}
		<-in.ready
	}
}

// close ends the inbox once what it holds is taken.
func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.signal()
}
