package api

import "time"

// Stats is the admin snapshot (GET /api/v1/admin/stats): the admission ledger's
// figures, which agree with each other, then the fleet's recent activity and who is
// running (best effort).
type Stats struct {
	Paused      bool  `json:"paused"`
	GlobalLimit int64 `json:"global_limit"`
	SlotsInUse  int64 `json:"slots_in_use"`
	Backlog     int64 `json:"backlog"`
	// Admissible is the part of the backlog more workers could admit now.
	Admissible int64                  `json:"admissible_backlog"`
	Rate       float64                `json:"completions_per_second"`
	Tenants    map[string]TenantStats `json:"tenants"`
	// Tickets counts the queued tickets and those holding slots, by status; Ended
	// counts the tickets that ever ended, by status.
	Tickets  map[string]int64 `json:"tickets"`
	Ended    map[string]int64 `json:"ended"`
	Activity *Activity        `json:"activity,omitempty"`
	// Nodes counts live nodes by role; EdgeStreams sums the edges' running streams.
	Nodes       map[string]int `json:"nodes"`
	EdgeStreams int64          `json:"edge_streams"`
	At          time.Time      `json:"at"`
}

// TenantStats is one tenant's share of admission.
type TenantStats struct {
	Queued int64   `json:"queued"`
	InUse  int64   `json:"in_use"`
	Limit  int64   `json:"limit"` // 0 = no own limit
	Weight float64 `json:"weight"`
}

// Activity is the fleet's recent activity: rates over the last RateSeconds, wait
// percentiles (seconds) over the last WaitSeconds.
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

// Nodes lists the registered workers, edges and ingresses (GET /api/v1/admin/workers).
type Nodes struct {
	Nodes []Node `json:"nodes"`
}

// Node is a worker, edge or ingress that beat within the registry's TTL.
type Node struct {
	ID       string    `json:"id"`
	Role     string    `json:"role"`
	Version  string    `json:"version"`
	Address  string    `json:"address"`
	InFlight int64     `json:"in_flight"` // worker: tickets held; edge: streams running
	Started  time.Time `json:"started_at"`
	LastBeat time.Time `json:"last_beat"`
	// AgeSeconds is how long ago the last beat was, by the ingress's clock.
	AgeSeconds float64 `json:"last_beat_age_seconds"`
	// Cache is an edge's disk cache since it started; nil without a cache.
	Cache *NodeCache `json:"cache,omitempty"`
}

// NodeCache is an edge cache's figures as its heartbeat carries them.
type NodeCache struct {
	Hits            int64   `json:"hits"`
	Misses          int64   `json:"misses"`
	BytesFromCache  int64   `json:"bytes_from_cache"`
	BytesFromOrigin int64   `json:"bytes_from_origin"`
	HitRatio        float64 `json:"hit_ratio"` // hits / (hits + misses); 0 before the first read
}

// Limits are the admission limits in force (GET /api/v1/admin/limits, and the answer
// to PUT): the operators' values where they set one, the configured defaults elsewhere.
type Limits struct {
	Global        int                     `json:"global"`
	TenantDefault int                     `json:"tenant_default"`
	Tenants       map[string]TenantLimits `json:"tenants"`
	Paused        bool                    `json:"paused"`
}

// TenantLimits are one tenant's own limits; a member left out is not set.
type TenantLimits struct {
	Limit  *int     `json:"limit,omitempty"`  // slots the tenant may hold at once, 0 = no own limit
	Weight *float64 `json:"weight,omitempty"` // share of slots when tenants compete (default 1)
	// RateBps caps each of the tenant's downloads, in bytes per second, 0 = the edge's
	// default. It is written into the tokens of tickets admitted after the change.
	RateBps *int64 `json:"rate_bps,omitempty"`
}

// LimitsUpdate is the body of PUT /api/v1/admin/limits: nil members stay as they are.
type LimitsUpdate struct {
	Global        *int                    `json:"global,omitempty"`
	TenantDefault *int                    `json:"tenant_default,omitempty"`
	Tenants       map[string]TenantLimits `json:"tenants,omitempty"`
}
