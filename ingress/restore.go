package ingress

import (
	"context"
	"errors"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
)

// TicketRecords reads tickets back from JetStream, where they are kept for good: the
// ledger in Redis is rebuilt from them.
type TicketRecords interface {
	Lookup(ctx context.Context, id string) (queue.Ticket, error)
}

// ticket reads a ticket from the ledger (Poll when touch: the caller is its waiting
// owner). A ticket the ledger does not know (Redis lost it, or a worker has not
// re-enqueued it yet) is looked up in its records: an ended one answers from its final
// state; a live one is put back in the ledger at its old place in line (its stream
// sequence) and read again. Only a ticket no record knows is ErrNotFound.
func (s *Server) ticket(ctx context.Context, id string, touch bool) (admission.Position, error) {
	return s.ticketAs(ctx, id, touch, admission.AnyOwner)
}

// ticketAs is ticket whose touch keeps the ticket alive only if it is owner's
// (Ledger.PollAs).
func (s *Server) ticketAs(ctx context.Context, id string, touch bool, owner string) (admission.Position, error) {
	read := s.cfg.Ledger.Get
	if touch {
		read = func(ctx context.Context, id string) (admission.Position, error) {
			return s.cfg.Ledger.PollAs(ctx, id, owner)
		}
	}
	p, err := read(ctx, id)
	if !errors.Is(err, admission.ErrNotFound) || s.cfg.Tickets == nil {
		return p, err
	}
	// Ended first: a ticket that ended keeps its message until its worker's next sweep.
	ended, err := s.cfg.Ledger.Ended(ctx, id)
	if err == nil {
		return admission.Position{Ticket: ended}, nil
	}
	if !errors.Is(err, admission.ErrNotFound) {
		return p, err
	}
	t, err := s.cfg.Tickets.Lookup(ctx, id)
	if errors.Is(err, queue.ErrNoTicket) {
		return p, admission.ErrNotFound
	}
	if err != nil {
		return p, err
	}
	// Restored unclaimed, as the workers' refill does: a poll by its owner (touch)
	// claims it back into line; a read that is not its client's must not. It keeps
	// the trace of the request that created it, which its message carries.
	if _, err := s.cfg.Ledger.Restore(ctx, t.Ledger()); err != nil {
		return p, err
	}
	s.log.InfoContext(ctx, "ticket restored into the ledger from its message", "ticket", id, "seq", t.Seq)
	return read(ctx, id)
}
