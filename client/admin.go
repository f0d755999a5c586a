package client

import (
	"context"
	"net/http"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
)

// TenantStats is one tenant's share of admission.
type TenantStats struct {
	Queued int64   `json:"queued"`
	InUse  int64   `json:"in_use"`
	Limit  int64   `json:"limit"`
	Weight float64 `json:"weight"`
}

// Activity is the fleet's recent activity.
type Activity struct {
	RateSeconds         int     `json:"rate_window_seconds"`
	AdmissionsPerSecond float64 `json:"admissions_per_second"`
	BytesPerSecond      float64 `json:"bytes_per_second"`
	WaitSeconds         int     `json:"wait_window_seconds"`
	Admissions          int64   `json:"admissions"`
	WaitP50             float64 `json:"wait_p50_seconds"`
	WaitP90             float64 `json:"wait_p90_seconds"`
	WaitP99             float64 `json:"wait_p99_seconds"`
}

// Stats is the admin snapshot (GET /api/v1/admin/stats).
type Stats struct {
	Paused      bool                   `json:"paused"`
	GlobalLimit int64                  `json:"global_limit"`
	SlotsInUse  int64                  `json:"slots_in_use"`
	Backlog     int64                  `json:"backlog"`
	Admissible  int64                  `json:"admissible_backlog"`
	Rate        float64                `json:"completions_per_second"`
	Tenants     map[string]TenantStats `json:"tenants"`
	Tickets     map[string]int64       `json:"tickets"`
	Ended       map[string]int64       `json:"ended"`
	Activity    *Activity              `json:"activity,omitempty"`
	Nodes       map[string]int         `json:"nodes"`
	EdgeStreams int64                  `json:"edge_streams"`
	At          time.Time              `json:"at"`
}

// The admission limits (GET and PUT /api/v1/admin/limits) are the server's own types,
// so the two cannot drift.
type (
	TenantLimits = admission.TenantLimits
	Limits       = admission.Limits
	LimitsUpdate = admission.LimitsUpdate
)

// Node is a registered worker, edge or ingress (GET /api/v1/admin/workers).
type Node struct {
	ID         string    `json:"id"`
	Role       string    `json:"role"`
	Version    string    `json:"version"`
	Address    string    `json:"address"`
	InFlight   int64     `json:"in_flight"`
	Started    time.Time `json:"started_at"`
	LastBeat   time.Time `json:"last_beat"`
	AgeSeconds float64   `json:"last_beat_age_seconds"`
}

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
	var out struct {
		Nodes []Node `json:"nodes"`
	}
	_, err := c.do(ctx, http.MethodGet, "/api/v1/admin/workers", nil, nil, &out)
	return out.Nodes, err
}
