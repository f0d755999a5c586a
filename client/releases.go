package client

import (
	"context"
	"net/http"

	"github.com/sluice-dl/sluice/api"
)

// The answer to a batch of release events (POST /api/v1/releases), as the server
// encodes it.
type (
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
