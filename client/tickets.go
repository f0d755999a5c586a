package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Ticket statuses as the API shows them.
const (
	StatusQueued    = "queued"
	StatusReady     = "ready"
	StatusStreaming = "streaming"
	StatusDone      = "done"
	StatusExpired   = "expired"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Ticket is a download ticket (GET /api/v1/tickets/{id}).
type Ticket struct {
	ID           string     `json:"id"`
	Object       string     `json:"object"`
	Status       string     `json:"status"`
	Position     int64      `json:"position"`
	ETASeconds   int64      `json:"eta_seconds"`
	ETAKnown     bool       `json:"eta_known"`
	DownloadURL  string     `json:"download_url,omitempty"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	BytesSent    int64      `json:"bytes_sent"`
	BytesCovered int64      `json:"bytes_covered"`
	Size         int64      `json:"size"`
	Error        string     `json:"error,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
}

// Ended reports whether the ticket can no longer change.
func (t Ticket) Ended() bool {
	switch t.Status {
	case StatusDone, StatusExpired, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// Ready reports whether the ticket has a download link.
func (t Ticket) Ready() bool {
	return (t.Status == StatusReady || t.Status == StatusStreaming) && t.DownloadURL != ""
}

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
