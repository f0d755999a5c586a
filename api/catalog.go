package api

import "time"

// States of a catalog entry.
const (
	StatePending  = "pending"  // an event was accepted; no worker has verified it yet
	StateVerified = "verified" // size and SHA-256 match the stored object version
	StateRejected = "rejected" // they do not: never served; Reason says why
)

// CatalogEntry is the release catalog's entry of a published object
// (GET /api/v1/objects/{key}, where key may be a channel alias like stable/latest).
type CatalogEntry struct {
	Object      string    `json:"object"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	ETag        string    `json:"etag"`
	ContentType string    `json:"content_type"`
	PublishedAt time.Time `json:"published_at"`
	Channel     string    `json:"channel"`
	State       string    `json:"state"`
	// Reason says why an entry is rejected, or why a pending one is stuck (its event
	// was dead-lettered).
	Reason string `json:"reason"`
}
