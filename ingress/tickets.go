package ingress

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
)

// wireTicket is a ticket as the API shows it: the one conversion from the ledger's
// record to the wire. Admitting (a worker is issuing the link) shows as queued at
// position 0; the link only while it may be used.
func wireTicket(p admission.Position) api.Ticket {
	v := api.Ticket{
		ID: p.ID, Object: p.Object, Status: string(p.Status), BytesSent: p.BytesSent, BytesCovered: p.BytesCovered,
		Size: p.Size, Error: p.Error, CreatedAt: p.Created.UTC(),
	}
	if p.Status == admission.StatusAdmitting {
		v.Status = api.StatusQueued // the link is being issued
	}
	if v.Status == api.StatusQueued {
		v.Position = p.Ahead
		v.ETASeconds, v.ETAKnown = int64((p.ETA+time.Second/2)/time.Second), p.ETAKnown
		v.Paused = p.Paused
	}
	if p.Status == admission.StatusReady || p.Status == admission.StatusStreaming {
		v.DownloadURL = p.DownloadURL
		if !p.Expires.IsZero() { // unknown for a stream that re-registered after a ledger loss
			exp := p.Expires.UTC()
			v.ExpiresAt = &exp
		}
	}
	return v
}

// getTicket is a client's poll: it keeps the ticket alive, and a queued one answers
// with the pace to poll at.
func (s *Server) getTicket(c *gin.Context) {
	p, ok := s.callerTicket(c, true)
	if !ok {
		return
	}
	if p.Status == admission.StatusQueued || p.Status == admission.StatusAdmitting {
		c.Header("Retry-After", strconv.Itoa(retryAfter(p)))
	}
	c.JSON(http.StatusOK, wireTicket(p))
}

func (s *Server) cancelTicket(c *gin.Context) {
	_, ok := s.callerTicket(c, false)
	if !ok {
		return
	}
	ctx, id := c.Request.Context(), c.Param("id") // the id callerTicket checked
	prev, err := s.cfg.Ledger.Cancel(ctx, id)
	if errors.Is(err, admission.ErrNotFound) {
		// Perhaps only the ledger lost it: restore it from its records, then cancel.
		if p, rerr := s.ticket(ctx, id, false); rerr != nil {
			err = rerr
		} else if p.Status.Terminal() {
			prev, err = p.Status, nil
		} else {
			prev, err = s.cfg.Ledger.Cancel(ctx, id)
		}
	}
	if err != nil {
		c.Error(err)
		return
	}
	if prev.Terminal() && prev != admission.StatusCanceled {
		c.Error(&apiError{Status: http.StatusConflict, Code: "ticket_ended",
			Message: "the ticket has already ended (" + string(prev) + ")", Hint: "nothing to cancel"})
		return
	}
	p, err := s.ownTicket(c, id, false)
	if err != nil {
		c.Error(err)
		return
	}
	// The cancel becomes a record now rather than when the worker holding the message
	// next reads the ledger's end log: a worker that lags behind by more than --retain
	// would otherwise find neither the ticket nor its end, and bring it back queued.
	if p.Status == admission.StatusCanceled {
		if err := s.cfg.Ledger.RecordEnded(ctx, p.Ticket); err != nil {
			s.log.WarnContext(ctx, "record the cancel; the worker holding the message records it", "ticket", id, "err", err)
		}
	}
	c.JSON(http.StatusOK, wireTicket(p))
}
