package client

import (
	"context"
	"net/http"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// Catalog states of a published object.
const (
	StateVerified = catalog.StateVerified
	StateRejected = catalog.StateRejected
	StatePending  = catalog.StatePending
)

// CatalogEntry is the release catalog's record of a published object
// (GET /api/v1/objects/{key}): the server's own type, so the two cannot drift.
type CatalogEntry = catalog.Entry

// Object reads the catalog entry of key (an object key or a channel alias such as
// stable/latest). An object that was never published answers 404.
func (c *Client) Object(ctx context.Context, key string) (CatalogEntry, error) {
	var e CatalogEntry
	_, err := c.do(ctx, http.MethodGet, "/api/v1/objects/"+objstore.EscapeKey(key), nil, nil, &e)
	return e, err
}
