package ingress

import (
	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

// A ticket is its owner's. One made with an API key can be read, followed, resumed and
// canceled only with a key of the same tenant, or an operator's; anyone else is told
// there is no such ticket (404: its existence is not confirmed). An anonymous ticket
// has no owner: its id, which only its creator was given, is the capability, and
// nothing others see names it (links carry it encrypted, see shared/token).

// ownerOf is who owns the tickets a caller makes: its tenant when it has a key.
func ownerOf(who apikeys.Key) string {
	if who.ID == anonymous.ID {
		return ""
	}
	return who.Tenant
}

// mayUse reports whether who may see and act on ticket t: the rule by which poll.lua
// lets a caller's poll keep a ticket alive, from the same name for the caller.
func mayUse(who apikeys.Key, t admission.Ticket) bool {
	caller := toucher(who)
	return caller == admission.AnyOwner || t.Owner == "" || caller != "" && caller == t.Owner
}

// callerTicket reads the ticket the route's :id names for the caller (ownTicket). On
// failure it has recorded the error for the answer and returns false; a malformed id
// is simply an unknown ticket.
func (s *Server) callerTicket(c *gin.Context, touch bool) (admission.Position, bool) {
	id := c.Param("id")
	if !ticketIDPattern.MatchString(id) {
		c.Error(admission.ErrNotFound)
		return admission.Position{}, false
	}
	p, err := s.ownTicket(c, id, touch)
	if err != nil {
		c.Error(err)
		return admission.Position{}, false
	}
	return p, true
}

// ownTicket reads a ticket (see ticket) for the caller, or ErrNotFound when it is not
// the caller's to see.
func (s *Server) ownTicket(c *gin.Context, id string, touch bool) (admission.Position, error) {
	who := principal(c)
	// One read: the ledger marks the ticket polled only when it is the caller's, so
	// that a poll by someone else does not keep it alive.
	p, err := s.ticketAs(c.Request.Context(), id, touch, toucher(who))
	if err == nil && !mayUse(who, p.Ticket) {
		return admission.Position{}, admission.ErrNotFound
	}
	return p, err
}

// toucher names, as Ledger.PollAs does, whose tickets who's polls keep alive: any
// (an operator), those of a tenant (a key; and tickets without an owner), or only
// tickets without an owner (no key).
func toucher(who apikeys.Key) string {
	switch {
	case who.Scope.Allows(apikeys.ScopeOperator):
		return admission.AnyOwner
	case who.ID == anonymous.ID:
		return "" // only tickets without an owner
	default:
		return who.Tenant
	}
}
