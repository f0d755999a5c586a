package api

import "time"

// Ticket statuses as the API shows them. A ticket whose link is being issued is shown
// as queued at position 0.
const (
	StatusQueued    = "queued"
	StatusReady     = "ready"
	StatusStreaming = "streaming"
	StatusDone      = "done"
	StatusExpired   = "expired"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Ticket is a download ticket (POST /api/v1/downloads, GET and DELETE
// /api/v1/tickets/{id}).
type Ticket struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	Status string `json:"status"`
	// Position, ETASeconds, ETAKnown and Paused are set while queued: tickets ahead
	// across all tenants, the estimated wait (known once enough downloads finished),
	// and whether an operator paused admission (then there is no estimate).
	Position   int64 `json:"position"`
	ETASeconds int64 `json:"eta_seconds"`
	ETAKnown   bool  `json:"eta_known"`
	Paused     bool  `json:"paused,omitempty"`
	// DownloadURL and ExpiresAt are set while ready or streaming; ExpiresAt is when
	// the link stops accepting new connections (unknown for a stream that
	// re-registered after the ledger was lost).
	DownloadURL string     `json:"download_url,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	BytesSent   int64      `json:"bytes_sent"`
	// BytesCovered is the distinct bytes sent: the ticket is done when it reaches Size.
	BytesCovered int64     `json:"bytes_covered"`
	Size         int64     `json:"size"`
	Error        string    `json:"error,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
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
