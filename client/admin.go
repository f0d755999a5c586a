package client

import (
	"context"
	"net/http"

	"github.com/sluice-dl/sluice/api"
)

// The admin snapshot (GET /api/v1/admin/stats) and the fleet's nodes
// (GET /api/v1/admin/workers), as the server encodes them.
type (
	Stats       = api.Stats
	TenantStats = api.TenantStats
	Activity    = api.Activity
	Node        = api.Node
)

// The admission limits (GET and PUT /api/v1/admin/limits), as the server encodes them.
type (
	TenantLimits = api.TenantLimits
	Limits       = api.Limits
	LimitsUpdate = api.LimitsUpdate
)

// Stats reads the admission snapshot.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	_, err := c.do(ctx, http.MethodGet, "/api/v1/admin/stats", nil, nil, &s)
	return s, err
}

// Limits reads the limits in force.
func (c *Client) Limits(ctx context.Context) (Limits, error) {
	var l Limits
	_, err := c.do(ctx, http.MethodGet, "/api/v1/admin/limits", nil, nil, &l)
	return l, err
}

// SetLimits applies an update and returns the limits now in force.
func (c *Client) SetLimits(ctx context.Context, u LimitsUpdate) (Limits, error) {
	var l Limits
	_, err := c.do(ctx, http.MethodPut, "/api/v1/admin/limits", nil, u, &l)
	return l, err
}

// SetPaused pauses (true) or resumes (false) admission.
func (c *Client) SetPaused(ctx context.Context, paused bool) error {
	path := "/api/v1/admin/resume"
	if paused {
		path = "/api/v1/admin/pause"
	}
	_, err := c.do(ctx, http.MethodPost, path, nil, nil, nil)
	return err
}

// Workers lists the live workers, edges and ingresses.
func (c *Client) Workers(ctx context.Context) ([]Node, error) {
	var out api.Nodes
	_, err := c.do(ctx, http.MethodGet, "/api/v1/admin/workers", nil, nil, &out)
	return out.Nodes, err
}
