package ingress

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/shared/admission"
)

// EdgeLinks moves a download link whose edge is no longer live to a live edge
// (fleet.EdgeChooser): the same token under another edge's URL, so the ticket keeps
// its slot, epoch and expiry. Repoint returns the link unchanged (false) when its
// edge is live or there is no live edge to move it to.
type EdgeLinks interface {
	Repoint(ctx context.Context, link, key string) (string, bool)
}

// POST /api/v1/tickets/{id}/link: the ticket's link, moved to a live edge if the edge
// it names has gone (its fleet heartbeat stopped). A client that cannot reach its
// link asks here rather than for a new ticket, which would go to the back of the
// queue. The ledger keeps the link as issued; every caller of this route gets the
// same live edge for it, the one the workers choose for the object now.
func (s *Server) relinkTicket(c *gin.Context) {
	p, ok := s.callerTicket(c, false)
	if !ok {
		return
	}
	switch {
	case p.Status == admission.StatusReady || p.Status == admission.StatusStreaming:
	case p.Status.Terminal():
		c.Error(&apiError{Status: http.StatusGone, Code: "ticket_ended",
			Message: "the ticket has already ended (" + string(p.Status) + ")", Hint: "request a new ticket with POST /api/v1/downloads"})
		return
	default:
		c.Error(&apiError{Status: http.StatusConflict, Code: "ticket_queued",
			Message: "the ticket has no link yet: it is still queued", Hint: "poll GET /api/v1/tickets/" + c.Param("id") + " until it is ready"})
		return
	}
	p.DownloadURL = s.liveLink(c.Request.Context(), p)
	c.JSON(http.StatusOK, wireTicket(p))
}

// liveLink is p's download link, moved to a live edge if the one it names is gone.
func (s *Server) liveLink(ctx context.Context, p admission.Position) string {
	if s.cfg.Edges == nil || p.DownloadURL == "" {
		return p.DownloadURL
	}
	link, moved := s.cfg.Edges.Repoint(ctx, p.DownloadURL, p.Object)
	if moved {
		s.log.Info("the edge of a ticket's link is gone; link moved to a live edge", "ticket", p.ID, "object", p.Object)
	}
	return link
}
