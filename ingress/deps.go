package ingress

import (
	"context"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

// The ingress's dependencies are declared here, as the ingress uses them, so that it
// can be built over anything that behaves like them: *admission.Ledger and
// *apikeys.Store in production, hand-written fakes in tests for the answers a real
// service cannot be made to give. The other parts it uses are declared next to
// their one use: Objects and Publisher (server.go), TicketRecords (restore.go),
// TicketLimiter (ratelimit.go), ReleaseQueue, Catalog and DeadLetters (releases.go),
// Fleet (ops.go).

// Ledger is what the ingress asks of the admission ledger.
type Ledger interface {
	TicketLedger
	IdempotencyLedger
	LimitsLedger
}

// TicketLedger records, reads and cancels tickets.
type TicketLedger interface {
	// RecordEnded makes a ticket's final state a record (a cancel is written at once:
	// a worker that receives its message only after the ledger forgot it must find it).
	RecordEnded(ctx context.Context, t admission.Ticket) error
	// Accept records a newly accepted ticket and reads it as its owner's first poll
	// would, in one round trip; Restore puts back one the ledger lost.
	Accept(ctx context.Context, t admission.Ticket) (admission.Position, error)
	Restore(ctx context.Context, t admission.Ticket) (bool, error)
	// Get reads a ticket; Poll reads it as its waiting owner does, keeping it alive.
	Get(ctx context.Context, id string) (admission.Position, error)
	Poll(ctx context.Context, id string) (admission.Position, error)
	// PollAs is Poll that keeps the ticket alive only if it is owner's (a tenant; ""
	// for anonymous callers: tickets without an owner; admission.AnyOwner).
	PollAs(ctx context.Context, id, owner string) (admission.Position, error)
	// Ended reads the record of a ticket that ended.
	Ended(ctx context.Context, id string) (admission.Ticket, error)
	Cancel(ctx context.Context, id string) (admission.Status, error)
}

// IdempotencyLedger binds Idempotency-Keys to the tickets they made.
type IdempotencyLedger interface {
	ClaimIdempotencyKey(ctx context.Context, scope, key, ticketID, object string, ttl time.Duration) (admission.Binding, error)
	RebindIdempotencyKey(ctx context.Context, scope, key, ticketID, object string, ttl time.Duration) error
}

// LimitsLedger is the operators' view of admission: limits, pause and figures.
type LimitsLedger interface {
	Limits(ctx context.Context) (admission.Limits, error)
	SetLimits(ctx context.Context, u admission.LimitsUpdate) (admission.Limits, error)
	SetPaused(ctx context.Context, paused bool) error
	// SharedStats is the admission snapshot, computed at most once a second for the
	// fleet: every open dashboard reads it each second.
	SharedStats(ctx context.Context) (admission.Stats, error)
}

// Keys checks the API keys callers present and manages them for operators.
type Keys interface {
	Check(ctx context.Context, presented string) (apikeys.Key, error)
	Create(ctx context.Context, scope apikeys.Scope, tenant, name string) (apikeys.Key, string, error)
	List(ctx context.Context) ([]apikeys.Key, error)
	Revoke(ctx context.Context, id string) error
}

var (
	_ Ledger = (*admission.Ledger)(nil)
	_ Keys   = (*apikeys.Store)(nil)
)
