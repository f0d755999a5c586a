package workers

import (
	"context"

	"github.com/sluice-dl/sluice/shared/admission"
)

// Ledger is what the admission worker asks of the admission ledger
// (*admission.Ledger), declared here as the worker uses it so that it can be built
// over a fake in tests. The worker's other dependencies are declared next to their
// use: Backlog and TokenIssuer (admission.go), Presigner (links.go), ReleaseStore,
// ReleaseCatalog and DeadLetterer (releases.go).
type Ledger interface {
	// Config is the ledger's effective configuration (the worker reads Retain).
	Config() admission.Config
	// Rebuild gives a lost ledger a new generation; Admit fails with
	// admission.ErrNoGeneration until it has one.
	Rebuild(ctx context.Context) (bool, error)
	WatchLimits(ctx context.Context) error

	Enqueue(ctx context.Context, t admission.Ticket) (bool, error)
	Restore(ctx context.Context, t admission.Ticket) (bool, error)
	Statuses(ctx context.Context, ids []string) ([]admission.Status, error)
	// Tickets reads many tickets in one round trip (the ended ones, to record them).
	Tickets(ctx context.Context, ids []string) ([]admission.Ticket, error)
	// EndedSince and EndLogTail read the log of tickets that ended, which settles
	// the held messages without asking after each.
	EndedSince(ctx context.Context, cursor string, max int) (admission.EndLog, error)
	EndLogTail(ctx context.Context) (cursor, generation string, err error)
	Ended(ctx context.Context, id string) (admission.Ticket, error)
	RecordEnded(ctx context.Context, t admission.Ticket) error

	Admit(ctx context.Context, max int) ([]admission.Grant, error)
	// Wakeups signals that admission may have work (a slot freed, a ticket queued
	// with slots free), so the worker admits at once rather than at its next round.
	Wakeups(ctx context.Context) <-chan struct{}
	// Ready publishes the links of a round of grants in one round trip.
	Ready(ctx context.Context, links []admission.Link) ([]error, error)
}

var _ Ledger = (*admission.Ledger)(nil)
