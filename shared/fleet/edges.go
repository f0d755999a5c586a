package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"math"
	"slices"
	"strings"
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
// per refresh interval. An edge that left drops out at the next refresh; one that
// stopped beating (crashed, cut off) once it missed two beats (the registry's own
// TTL is longer: operators should still see a node that hiccuped), judged by the
// registry's clock, not the worker's.
type EdgeChooser struct {
	reg     *Registry
	refresh time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	nodes   []Node
	fetched time.Time
}

// edgeSilence is how long since its last beat an edge is still chosen: two beats.
const edgeSilence = 2 * time.Second

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
	n, ok := ChooseEdge(c.live(ctx), key)
	if !ok {
		return ""
	}
	return n.PublicURL
}

// Repoint moves a link whose edge is no longer live to the edge chosen for key among
// the live ones, the one every worker would choose now. A link is base + "/d/" + token
// + "/" + name, and the token is valid on every edge: only base changes, so the link
// keeps its ticket's slot, epoch and expiry. The link comes back unchanged (false)
// when its edge is live, when no live edge advertises a URL (one public URL for all
// edges: nothing to choose from) or when it is not an edge link (a presigned storage
// URL).
func (c *EdgeChooser) Repoint(ctx context.Context, link, key string) (string, bool) {
	i := strings.LastIndex(link, "/d/")
	if i < 0 {
		return link, false
	}
	base, rest := link[:i], link[i:]
	live := c.live(ctx)
	for _, n := range live {
		if n.Role == RoleEdge && n.PublicURL == base {
			return link, false
		}
	}
	n, ok := ChooseEdge(live, key)
	if !ok {
		return link, false
	}
	return n.PublicURL + rest, true
}

// live is the list of live nodes, read from the registry at most once per refresh.
func (c *EdgeChooser) live(ctx context.Context) []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.fetched) >= c.refresh {
		nodes, now, err := c.reg.nodesAt(ctx)
		if err != nil {
			c.log.Debug("read the fleet for edge choice; using the last list", "err", err)
		} else {
			c.nodes = slices.DeleteFunc(nodes, func(n Node) bool { return now.Sub(n.LastBeat) > edgeSilence })
		}
		c.fetched = time.Now()
	}
	return c.nodes
}
