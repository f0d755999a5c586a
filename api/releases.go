package api

import (
	"encoding/json"
	"time"
)

// ReleaseEvent announces one published file: the body of POST /api/v1/releases, or
// one line of an NDJSON batch. Object, SHA256 (64 hex digits) and Size are required;
// without an EventID, the same object and digest announced twice are the same event.
type ReleaseEvent struct {
	EventID string `json:"event_id,omitempty"`
	Object  string `json:"object"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	// Channel, like stable, makes <channel>/latest name this object once verified.
	Channel string `json:"channel,omitempty"`
}

// ReleaseResult is the answer to a batch of release events (POST /api/v1/releases).
// A refused batch answers problem details with the same members as extensions, and
// not_accepted.
type ReleaseResult struct {
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Rejected   []RejectedLine `json:"rejected"`
}

// RejectedLine is a line of a batch that was not accepted, and why.
type RejectedLine struct {
	Line  int    `json:"line"` // 1-based line of the NDJSON batch
	Error string `json:"error"`
}

// DeadLetters is a page of the release events the workers gave up on
// (GET /api/v1/admin/releases/dead), oldest first. Next, when set, is the path of the
// following page.
type DeadLetters struct {
	Dead []DeadLetter `json:"dead"`
	Next string       `json:"next,omitempty"`
}

// DeadLetter is a release event the workers gave up on, with why.
type DeadLetter struct {
	ID       uint64    `json:"id"` // what POST /api/v1/admin/releases/dead/{id}/replay takes
	Subject  string    `json:"subject"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	DeadAt   time.Time `json:"dead_at"`
	// Event is the message as it was published: a release event as the ingress
	// stored it or a MinIO bucket notification, or, when it was not JSON, its bytes as
	// a JSON string.
	Event json.RawMessage `json:"event"`
}

// Replayed is the answer to POST /api/v1/admin/releases/dead/{id}/replay: the dead
// letter sent back to the workers.
type Replayed struct {
	Replayed DeadLetter `json:"replayed"`
}

// ReleaseStats is GET /api/v1/admin/releases/stats: the catalog's counters, the
// release events waiting for a worker and the dead letters.
type ReleaseStats struct {
	Catalog CatalogCounters `json:"catalog"`
	Backlog uint64          `json:"backlog"` // events in the stream not yet verified
	Dead    uint64          `json:"dead"`    // dead letters kept
}

// CatalogCounters count what the release workers did, ever (rebuilt from zero when
// Redis is lost).
type CatalogCounters struct {
	Recorded            int64 `json:"events_recorded"`
	Verified            int64 `json:"verified"`
	Rejected            int64 `json:"rejected"`
	Superseded          int64 `json:"superseded"`
	DuplicateDeliveries int64 `json:"duplicate_deliveries"`
	HashesComputed      int64 `json:"hashes_computed"`
}
