package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// Ticket statuses as the API shows them.
const (
	StatusQueued    = api.StatusQueued
	StatusReady     = api.StatusReady
	StatusStreaming = api.StatusStreaming
	StatusDone      = api.StatusDone
	StatusExpired   = api.StatusExpired
	StatusFailed    = api.StatusFailed
	StatusCanceled  = api.StatusCanceled
)

// Ticket is a download ticket (GET /api/v1/tickets/{id}), as the server encodes it.
type Ticket = api.Ticket

// Poll is a ticket with the server's pacing: poll again after RetryAfter.
type Poll struct {
	Ticket
	RetryAfter time.Duration
}

// CreateDownload asks for a ticket for object (POST /api/v1/downloads). A non-empty
// idempotencyKey makes a retried request return the same ticket.
func (c *Client) CreateDownload(ctx context.Context, object, idempotencyKey string) (Poll, error) {
	hdr := http.Header{}
	if idempotencyKey != "" {
		hdr.Set("Idempotency-Key", idempotencyKey)
	}
	var p Poll
	h, err := c.do(ctx, http.MethodPost, "/api/v1/downloads", hdr, map[string]string{"object": object}, &p.Ticket)
	if err != nil {
		return Poll{}, err
	}
	p.RetryAfter = RetryAfter(h)
	return p, nil
}

// Ticket reads a ticket (GET /api/v1/tickets/{id}); reading it also tells the server
// its owner is still waiting.
func (c *Client) Ticket(ctx context.Context, id string) (Poll, error) {
	var p Poll
	h, err := c.do(ctx, http.MethodGet, "/api/v1/tickets/"+url.PathEscape(id), nil, nil, &p.Ticket)
	if err != nil {
		return Poll{}, err
	}
	p.RetryAfter = RetryAfter(h)
	return p, nil
}

// Cancel cancels a ticket (DELETE /api/v1/tickets/{id}), giving back its slot. A
// ticket that had already ended answers 409 (code "ticket_ended").
func (c *Client) Cancel(ctx context.Context, id string) (Ticket, error) {
	var t Ticket
	_, err := c.do(ctx, http.MethodDelete, "/api/v1/tickets/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}

// Relink asks for the ticket's link on a live edge (POST /api/v1/tickets/{id}/link),
// for a link that cannot be reached: the same ticket and slot, the link moved if the
// edge it named has gone, else unchanged.
func (c *Client) Relink(ctx context.Context, id string) (Ticket, error) {
	var t Ticket
	_, err := c.do(ctx, http.MethodPost, "/api/v1/tickets/"+url.PathEscape(id)+"/link", nil, nil, &t)
	return t, err
}
