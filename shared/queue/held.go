package queue

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Held is a ticket message that a worker keeps unacknowledged while its ticket lives,
// reduced to what acknowledges, returns and renews it: its reply subject. A worker
// holds one per waiting ticket, so it keeps nothing else of the message (the ticket's
// fields are in the ledger and, while the message lives, in the stream: Lookup).
type Held string

// Hold is msg as held.
func Hold(msg jetstream.Msg) Held { return Held(msg.Reply()) }

// Acker settles held messages over a connection to the server that delivered them,
// with the bodies of the JetStream acknowledgement protocol, as jetstream.Msg's own
// Ack, Nak and InProgress send them (the package has no way to settle a message by
// its reply subject alone).
type Acker struct{ nc *nats.Conn }

// NewAcker returns an acker over nc, the connection the consumer uses.
func NewAcker(nc *nats.Conn) *Acker { return &Acker{nc: nc} }

var (
	ackBody      = []byte("+ACK")
	nakBody      = []byte("-NAK")
	progressBody = []byte("+WPI")
)

// Ack acknowledges h: the stream drops the message.
func (a *Acker) Ack(h Held) error { return a.send(h, ackBody) }

// Nak hands h back for redelivery now.
func (a *Acker) Nak(h Held) error { return a.send(h, nakBody) }

// InProgress restarts h's AckWait.
func (a *Acker) InProgress(h Held) error { return a.send(h, progressBody) }

func (a *Acker) send(h Held, body []byte) error {
	if h == "" {
		return fmt.Errorf("settle a ticket message: %w", jetstream.ErrMsgNoReply)
	}
	return a.nc.Publish(string(h), body)
}
