package apiclient

import (
	"context"
	"net/http"
	"time"
)

// Catalog states of a published object.
const (
	StateVerified = "verified"
	StateRejected = "rejected"
	StatePending  = "pending"
)

// CatalogEntry is the release catalog's record of a published object
// (GET /api/v1/objects/{key}).
type CatalogEntry struct {
	Object      string    `json:"object"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	ETag        string    `json:"etag"`
	ContentType string    `json:"content_type"`
	PublishedAt time.Time `json:"published_at"`
	Channel     string    `json:"channel"`
	State       string    `json:"state"`
	Reason      string    `json:"reason"`
}

// Object reads the catalog entry of key (an object key or a channel alias such as
// stable/latest). An object that was never published answers 404.
func (c *Client) Object(ctx context.Context, key string) (CatalogEntry, error) {
	var e CatalogEntry
	_, err := c.do(ctx, http.MethodGet, "/api/v1/objects/"+escapeKey(key), nil, nil, &e)
	return e, err
}
