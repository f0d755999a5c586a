package workers

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
)

// Ledger is what the admission worker asks of the admission ledger
// (*admission.Ledger), declared here as the worker uses it so that it can be built
// over a fake in tests. The worker's other dependencies are declared here (the
// consumer and the acker) or next to their use: Backlog and TokenIssuer
// (admission.go), Presigner (links.go), ReleaseStore, ReleaseCatalog and DeadLetterer
// (releases.go).
//
// It is the union of what each of the worker's loops uses, so that a reader sees which
// part of the ledger each one touches.
type Ledger interface {
	ledgerSetup
	intake
	admitter
	settler
}

// ledgerSetup is what Prepare and the limits watcher use.
type ledgerSetup interface {
	// Config is the ledger's effective configuration (the worker reads Retain).
	Config() admission.Config
	// Rebuild gives a lost ledger a new generation; Admit fails with
	// admission.ErrNoGeneration until it has one.
	Rebuild(ctx context.Context) (bool, error)
	WatchLimits(ctx context.Context) error
}

// intake is what receiving a ticket message uses: it enters the ledger (or, after the
// ledger was lost, comes back into it), unless it already ended.
type intake interface {
	EnqueueAll(ctx context.Context, tickets []admission.Ticket) ([]bool, error)
	Restore(ctx context.Context, t admission.Ticket) (bool, error)
	RestoreAll(ctx context.Context, tickets []admission.Ticket) ([]bool, error)
	Statuses(ctx context.Context, ids []string) ([]admission.Status, error)
}

// admitter is what an admission round uses.
type admitter interface {
	Admit(ctx context.Context, max int) ([]admission.Grant, error)
	// Wakeups signals that admission may have work (a slot freed, a ticket queued
	// with slots free), so the worker admits at once rather than at its next round.
	Wakeups(ctx context.Context) <-chan struct{}
	// Ready publishes the links of a round of grants in one round trip.
	Ready(ctx context.Context, links []admission.Link) ([]error, error)
}

// settler is what the sweep uses to settle held messages of tickets that ended.
type settler interface {
	// EndedSince and EndLogTail read the log of tickets that ended, which settles
	// the held messages without asking after each.
	EndedSince(ctx context.Context, cursor string, max int) (admission.EndLog, error)
	EndLogTail(ctx context.Context) (cursor, generation string, err error)
	// Tickets reads many tickets in one round trip (the ended ones, to record them).
	Tickets(ctx context.Context, ids []string) ([]admission.Ticket, error)
	Ended(ctx context.Context, id string) (admission.Ticket, error)
	RecordEnded(ctx context.Context, t admission.Ticket) error
}

// MessageSource is the JetStream consumer a worker takes its messages from
// (jetstream.Consumer).
type MessageSource interface {
	Consume(handler jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error)
}

// Settler acknowledges, hands back or extends held ticket messages by their reply
// subjects (*queue.Acker).
type Settler interface {
	Ack(h queue.Held) error
	Nak(h queue.Held) error
	InProgress(h queue.Held) error
}

var (
	_ Ledger        = (*admission.Ledger)(nil)
	_ MessageSource = jetstream.Consumer(nil)
	_ Settler       = (*queue.Acker)(nil)
)
