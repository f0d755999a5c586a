package client

import (
	"context"
	"net/http"
)

// RejectedLine is an event of a batch the server refused, with why.
type RejectedLine struct {
	Line  int    `json:"line"` // 1-based line of the NDJSON batch
	Error string `json:"error"`
}

// ReleaseResult is the answer to a batch of release events (POST /api/v1/releases).
type ReleaseResult struct {
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Rejected   []RejectedLine `json:"rejected"`
}

// PublishReleases sends release events, one JSON object a line (NDJSON). A full
// queue answers 503 with Retry-After: send the same batch again, and what went in
// the first time comes back as duplicates.
func (c *Client) PublishReleases(ctx context.Context, ndjson []byte) (ReleaseResult, error) {
	var r ReleaseResult
	_, err := c.send(ctx, http.MethodPost, "/api/v1/releases", nil, "application/x-ndjson", ndjson, &r)
	return r, err
}
