package admission

import (
	"time"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Status is where a ticket is in its life.
type Status string

// Ticket statuses. Admitting is internal (a worker is issuing the link) and is shown to
// clients as queued at position 0.
const (
	StatusQueued    Status = "queued"
	StatusAdmitting Status = "admitting"
	StatusReady     Status = "ready"
	StatusStreaming Status = "streaming"
	StatusDone      Status = "done"
	StatusExpired   Status = "expired"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// statusWords are the statuses as the scripts answer them.
var statusWords = []string{string(StatusQueued), string(StatusAdmitting), string(StatusReady), string(StatusStreaming),
	string(StatusDone), string(StatusExpired), string(StatusFailed), string(StatusCanceled)}

// Terminal reports whether nothing more will happen to a ticket in this status.
func (s Status) Terminal() bool {
	switch s {
	case StatusDone, StatusExpired, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// Ticket is one client's request for one object version.
type Ticket struct {
	ID          string
	Object      string
	ETag        string
	Size        int64
	ContentType string
	Tenant      string
	Owner       string // the tenant whose key made it; empty: anonymous, the id is the capability
	Seq         uint64 // JetStream sequence of the ticket's message: FIFO order
	Created     time.Time
	// TraceParent is the W3C trace context of the request that created the ticket, so
	// whichever worker admits it continues the same trace; empty when not traced.
	TraceParent string

	Status      Status
	Epoch       int64
	DownloadURL string
	Expires     time.Time // when the download link stops accepting new connections
	BytesSent   int64     // sent on every connection in all: progress, bandwidth
	// BytesCovered is how much of the object was sent at least once; the ticket is
	// done when it reaches Size (re-requested ranges count once).
	BytesCovered int64
	Conns        int
	Error        string
	Admitted     time.Time
	Ready        time.Time
	Ended        time.Time
}

// Position is a ticket together with what a waiting client wants to know.
type Position struct {
	Ticket
	// Ahead is how many tickets, across all tenants, will be admitted before this one.
	Ahead int64
	// ETA is the smoothed estimate of the wait; ETAKnown is false until enough
	// slots have been given back to know how long one is held.
	ETA      time.Duration
	ETAKnown bool
	// Paused: admission is paused by an operator; nothing is admitted until resumed.
	Paused bool
}

// ticketFromHash reads a ticket's hash in the ledger (t:<id>); a field of the wrong
// form is h's decoder's error.
func ticketFromHash(h redisreply.Hash) Ticket {
	ms := func(k string) time.Time {
		if n := h.Int(k); n > 0 {
			return time.UnixMilli(n)
		}
		return time.Time{}
	}
	return Ticket{
		ID:           h.String("id"),
		Object:       h.String("object"),
		ETag:         h.String("etag"),
		Size:         h.Int("size"),
		ContentType:  h.String("content_type"),
		Tenant:       h.String("tenant"),
		Owner:        h.String("owner"),
		Seq:          uint64(h.Int("seq")),
		Created:      ms("created_ms"),
		TraceParent:  h.String("traceparent"),
		Status:       Status(h.String("status")),
		Epoch:        h.Int("epoch"),
		DownloadURL:  h.String("download_url"),
		Expires:      ms("expires_ms"),
		BytesSent:    h.Int("bytes_sent"),
		BytesCovered: h.Int("bytes_covered"),
		Conns:        int(h.Int("conns")),
		Error:        h.String("error"),
		Admitted:     ms("admitted_ms"),
		Ready:        ms("ready_ms"),
		Ended:        ms("ended_ms"),
	}
}
