package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/sluice-dl/sluice/api"
)

// A release event (one line of POST /api/v1/releases) and the answer to a batch of
// them, as the server decodes and encodes them.
type (
	ReleaseEvent  = api.ReleaseEvent
	ReleaseResult = api.ReleaseResult
	RejectedLine  = api.RejectedLine
)

// PublishReleases sends release events, one JSON object a line (NDJSON). A full
// queue answers 503 with Retry-After: send the same batch again, and what went in
// the first time comes back as duplicates.
func (c *Client) PublishReleases(ctx context.Context, ndjson []byte) (ReleaseResult, error) {
	var r ReleaseResult
	_, err := c.send(ctx, http.MethodPost, "/api/v1/releases", nil, "application/x-ndjson", ndjson, &r)
	return r, err
}

// DeadLetter is a release event the workers gave up on, with why
// (GET /api/v1/admin/releases/dead), as the server encodes it.
type DeadLetter = api.DeadLetter

// DeadReleases lists up to limit dead-lettered release events with ids after after,
// oldest first; more is true when the server has further ones.
func (c *Client) DeadReleases(ctx context.Context, after uint64, limit int) (list []DeadLetter, more bool, err error) {
	var out api.DeadLetters
	path := fmt.Sprintf("/api/v1/admin/releases/dead?after=%d&limit=%d", after, limit)
	_, err = c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Dead, out.Next != "", err
}

// ReplayRelease sends a dead-lettered event back to the workers and returns it.
func (c *Client) ReplayRelease(ctx context.Context, id uint64) (DeadLetter, error) {
	var out api.Replayed
	_, err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/admin/releases/dead/%d/replay", id), nil, nil, &out)
	return out.Replayed, err
}
