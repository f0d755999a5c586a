package workers

import (
	"errors"
	"log/slog"
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
