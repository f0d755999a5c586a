package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"math"
	"sync"
	"time"
)

// RoleEdge is the role edges register with.
const RoleEdge = "edge"

// ChooseEdge picks the edge that should serve key among nodes: weighted rendezvous
// (highest random weight) hashing over the live edges that advertise a public URL.
// Each edge's score for key is -weight/ln(u), u a hash of (key, public URL) in (0,1),
// so every worker picks the same edge for the same key without talking to the others,
// an edge gets a share of the keys proportional to its weight, and when one goes
// away only its own keys move. The hash is of the public URL, not the node id, so an
// edge restarted at the same URL keeps its keys (and its cache stays useful).
//
// The weight is the edge's cache capacity (at least 1): its free bytes would be the
// obvious choice, but an LRU cache is always nearly full and its free bytes change
// with every fill, which would move keys between edges all the time.
func ChooseEdge(nodes []Node, key string) (Node, bool) {
	var best Node
	bestScore, found := math.Inf(-1), false
	for _, n := range nodes {
		if n.Role != RoleEdge || n.PublicURL == "" {
			continue
		}
		sum := sha256.Sum256([]byte(key + "\x00" + n.PublicURL))
		// u in (0,1): 53 well-mixed bits, never 0 or 1.
		u := (float64(binary.BigEndian.Uint64(sum[:8])>>11) + 0.5) / (1 << 53)
		score := -float64(max(n.CacheBytes, 1)) / math.Log(u)
		if !found || score > bestScore || score == bestScore && n.PublicURL < best.PublicURL {
			best, bestScore, found = n, score, true
		}
	}
	return best, found
}

// EdgeChooser picks edges from the registry, reading the list of nodes at most once
// per refresh interval: an edge that stops beating drops out within its TTL plus one
// refresh.
type EdgeChooser struct {
	reg     *Registry
	refresh time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	nodes   []Node
	fetched time.Time
}

// NewEdgeChooser returns a chooser over reg's edges, refreshed every refresh (1s).
func NewEdgeChooser(reg *Registry, refresh time.Duration, log *slog.Logger) *EdgeChooser {
	if refresh <= 0 {
		refresh = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EdgeChooser{reg: reg, refresh: refresh, log: log.With("component", "fleet")}
}

// EdgeURL returns the public URL of the edge for key, or "" when no live edge
// advertises one (the caller then uses its one configured URL). When the registry
// cannot be read, the last list read is used.
func (c *EdgeChooser) EdgeURL(ctx context.Context, key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.fetched) >= c.refresh {
		nodes, err := c.reg.Nodes(ctx)
		if err != nil {
			c.log.Debug("read the fleet for edge choice; using the last list", "err", err)
		} else {
			c.nodes = nodes
		}
		c.fetched = time.Now()
	}
	n, ok := ChooseEdge(c.nodes, key)
	if !ok {
		return ""
	}
	return n.PublicURL
}
