package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluice-dl/sluice/api"
)

// Catalog states of a published object.
const (
	StateVerified = api.StateVerified
	StateRejected = api.StateRejected
	StatePending  = api.StatePending
)

// CatalogEntry is the release catalog's entry of a published object
// (GET /api/v1/objects/{key}), as the server encodes it.
type CatalogEntry = api.CatalogEntry

// Object reads the catalog entry of key (an object key or a channel alias such as
// stable/latest). An object that was never published answers 404.
func (c *Client) Object(ctx context.Context, key string) (CatalogEntry, error) {
	var e CatalogEntry
	_, err := c.do(ctx, http.MethodGet, "/api/v1/objects/"+escapeKey(key), nil, nil, &e)
	return e, err
}

// escapeKey writes an object key as a URL path: each segment escaped, the slashes
// kept, so that /api/v1/objects/ + escapeKey(key) names the object and nothing else.
func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
