// Package fleet is the registry of running sluice processes: every worker, edge and
// ingress beats into Redis once a second with its role, version, address and in-flight
// work, and is forgotten a TTL after its last beat. The beats also carry what the node
// did since the previous one (admissions, their wait times, bytes sent), summed per
// second in a rolling window, from which the admin stats compute rates and wait
// percentiles for the whole fleet without any process keeping state of its own.
package fleet

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

var (
	//go:embed lua/beat.lua
	beatLua string
	//go:embed lua/nodes.lua
	nodesLua string
	//go:embed lua/window.lua
	windowLua string

	beatScript   = redis.NewScript(beatLua)
	nodesScript  = redis.NewScript(nodesLua)
	windowScript = redis.NewScript(windowLua)
)

// Scripts names the registry's Lua scripts, so that the Redis metrics
// (telemetry.Metrics.RedisHook) record which one ran instead of evalsha.
func Scripts() map[string]*redis.Script {
	return map[string]*redis.Script{"fleet.beat": beatScript, "fleet.nodes": nodesScript, "fleet.window": windowScript}
}

// Config holds the registry's keys and timings; zero values take the defaults.
type Config struct {
	Prefix     string        // key prefix with a hash tag ("sluice:{fleet}:")
	TTL        time.Duration // a node is forgotten this long after its last beat (10s)
	WindowKeep time.Duration // how long per-second figures are kept (16m: the dashboard's 15 minutes of history and a minute to summarize its first point)
}

// Registry reads and writes the fleet's entries.
type Registry struct {
	rdb redis.UniversalClient
	cfg Config
}

// New returns a registry over rdb.
func New(rdb redis.UniversalClient, cfg Config) *Registry {
	if cfg.Prefix == "" {
		cfg.Prefix = "sluice:{fleet}:"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.WindowKeep <= 0 {
		cfg.WindowKeep = 16 * time.Minute
	}
	return &Registry{rdb: rdb, cfg: cfg}
}

// Node is one process part (a worker, an edge, an ingress) as it last reported.
type Node struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	Version  string `json:"version"`
	Address  string `json:"address"`
	InFlight int64  `json:"in_flight"` // worker: tickets held; edge: streams running
	// PublicURL is where clients reach an edge that takes part in edge choice
	// (ChooseEdge); CacheBytes its disk cache's capacity, the weight of its share.
	PublicURL  string    `json:"public_url,omitempty"`
	CacheBytes int64     `json:"cache_bytes,omitempty"`
	Started    time.Time `json:"started_at"`
	LastBeat   time.Time `json:"last_beat"`
	// Cache is an edge's disk cache figures since it started; nil without a cache.
	Cache *CacheFigures `json:"cache,omitempty"`
}

// CacheFigures are an edge cache's running totals (edgecache.Stats), carried by
// the edge's heartbeat for the dashboard.
type CacheFigures struct {
	Hits            int64 `json:"hits"`
	Misses          int64 `json:"misses"`
	BytesFromCache  int64 `json:"bytes_from_cache"`
	BytesFromOrigin int64 `json:"bytes_from_origin"`
}

// Activity is what a node did between two beats.
type Activity struct {
	Admissions int64
	Bytes      int64
	// Waits counts admissions by wait time, bucket i holding waits up to
	// telemetry.WaitBuckets[i] and the last one those above.
	Waits []int64
	// Levels are the admission ledger's levels when the node beat; nil when it did not
	// read them (only ingresses do).
	Levels *Levels
}

// Levels are the admission ledger's levels at one moment, the figures behind the
// dashboard's backlog and slots charts. Unlike the rest of Activity they are not
// summed over the nodes: every ingress reads the same fleet-wide snapshot.
type Levels struct {
	Backlog    int64 `json:"backlog"`
	Admissible int64 `json:"admissible_backlog"`
	SlotsInUse int64 `json:"slots_in_use"`
	Limit      int64 `json:"global_limit"`
}

// Beat records n as alive now, with what it did since its previous beat.
func (r *Registry) Beat(ctx context.Context, n Node, a Activity) error {
	argv := []any{n.ID, n.Role, n.Version, n.Address, n.InFlight, n.Started.UnixMilli(),
		r.cfg.TTL.Milliseconds(), r.cfg.WindowKeep.Milliseconds(), a.Admissions, a.Bytes, n.PublicURL, n.CacheBytes}
	if c := n.Cache; c != nil {
		argv = append(argv, c.Hits, c.Misses, c.BytesFromCache, c.BytesFromOrigin)
	} else {
		argv = append(argv, "", "", "", "")
	}
	if l := a.Levels; l != nil {
		argv = append(argv, l.Backlog, l.Admissible, l.SlotsInUse, l.Limit)
	} else {
		argv = append(argv, "", "", "", "")
	}
	for _, w := range a.Waits {
		argv = append(argv, w)
	}
	if err := beatScript.Run(ctx, r.rdb, []string{r.cfg.Prefix}, argv...).Err(); err != nil {
		return fmt.Errorf("heartbeat of %s: %w", n.ID, err)
	}
	return nil
}

// Leave removes a node at once (on a clean shutdown).
func (r *Registry) Leave(ctx context.Context, id string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.cfg.Prefix+"node:"+id)
		p.ZRem(ctx, r.cfg.Prefix+"nodes", id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("leave the fleet: %w", err)
	}
	return nil
}

// Nodes lists the nodes that beat within the TTL, by role then id.
func (r *Registry) Nodes(ctx context.Context) ([]Node, error) {
	nodes, _, err := r.nodesAt(ctx)
	return nodes, err
}

// nodesAt is Nodes and the registry's time (Redis TIME) when it listed them.
func (r *Registry) nodesAt(ctx context.Context) ([]Node, time.Time, error) {
	vals, err := nodesScript.Run(ctx, r.rdb, []string{r.cfg.Prefix}, r.cfg.TTL.Milliseconds()).Slice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list the fleet: %w", err)
	}
	d := redisreply.New("fleet nodes")
	top := d.Array(vals, 2) // { NOW, { node hash, ... } }
	nowMs := top.Int(0)
	rows := top.Array(1, 0)
	nodes := make([]Node, 0, rows.Len())
	for i := range rows.Len() {
		h := rows.Pairs(i)
		nodes = append(nodes, Node{ID: h.String("id"), Role: h.String("role"), Version: h.String("version"), Address: h.String("address"),
			InFlight: h.Int("in_flight"), PublicURL: h.String("public_url"), CacheBytes: h.Int("cache_bytes"),
			Started: time.UnixMilli(h.Int("started_ms")).UTC(), LastBeat: time.UnixMilli(h.Int("last_beat_ms")).UTC()})
		if h.String("cache_hits") != "" {
			nodes[len(nodes)-1].Cache = &CacheFigures{Hits: h.Int("cache_hits"), Misses: h.Int("cache_misses"),
				BytesFromCache: h.Int("cache_bytes_hit"), BytesFromOrigin: h.Int("cache_bytes_origin")}
		}
	}
	if err := d.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("list the fleet: %w", err)
	}
	slices.SortFunc(nodes, func(a, b Node) int {
		if a.Role != b.Role {
			return compare(a.Role, b.Role)
		}
		return compare(a.ID, b.ID)
	})
	return nodes, time.UnixMilli(nowMs).UTC(), nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Second is the fleet's activity in one second of Redis time.
type Second struct {
	At time.Time
	Activity
}

// Window returns the last n complete seconds, oldest first.
func (r *Registry) Window(ctx context.Context, n int) ([]Second, error) {
	vals, err := windowScript.Run(ctx, r.rdb, []string{r.cfg.Prefix}, n).Slice()
	if err != nil {
		return nil, fmt.Errorf("read the activity window: %w", err)
	}
	d := redisreply.New("fleet activity window")
	reply := d.Array(vals, 2) // { first second, { second hash, ... } }
	first, rows := reply.Int(0), reply.Array(1, 0)
	out := make([]Second, rows.Len())
	for i := range rows.Len() {
		h := rows.Pairs(i)
		s := Second{At: time.Unix(first+int64(i), 0).UTC()}
		s.Admissions = h.Int("admissions")
		s.Bytes = h.Int("bytes")
		s.Waits = make([]int64, len(telemetry.WaitBuckets)+1)
		for b := range s.Waits {
			s.Waits[b] = h.Int("w" + strconv.Itoa(b))
		}
		if h.String("limit") != "" {
			s.Levels = &Levels{Backlog: h.Int("backlog"), Admissible: h.Int("admissible"),
				SlotsInUse: h.Int("slots"), Limit: h.Int("limit")}
		}
		out[i] = s
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("read the activity window: %w", err)
	}
	return out, nil
}

// MemberConfig describes the node a Member beats for.
type MemberConfig struct {
	Role    string
	Version string
	Address string // where operators reach it (its HTTP listener)
	// PublicURL and CacheBytes: an edge that workers may choose for links (ChooseEdge).
	PublicURL  string
	CacheBytes int64
	InFlight   func() int64 // its in-flight work now; nil: 0
	// BytesSent is the node's running total of bytes sent (an edge); nil: none.
	BytesSent func() int64
	// Cache is an edge's disk cache figures now; nil: no cache.
	Cache func() CacheFigures
	// Levels reads the admission levels for the beat's window (an ingress); nil, or
	// an error, leaves that second without them.
	Levels func(ctx context.Context) (Levels, error)
	Every  time.Duration // beat interval (1s)
	Logger *slog.Logger
	Now    func() time.Time
}

// Member keeps one node registered while it runs.
type Member struct {
	reg  *Registry
	cfg  MemberConfig
	node Node
	log  *slog.Logger

	mu        sync.Mutex
	pending   Activity
	lastBytes int64
}

// Join returns a Member for a node of cfg.Role with a fresh id; Run beats.
func (r *Registry) Join(cfg MemberConfig) *Member {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := fmt.Sprintf("%s-%s-%s", host, cfg.Role, hex.EncodeToString(b))
	m := &Member{reg: r, cfg: cfg, log: cfg.Logger.With("component", "fleet", "node", id),
		node: Node{ID: id, Role: cfg.Role, Version: cfg.Version, Address: cfg.Address,
			PublicURL: cfg.PublicURL, CacheBytes: cfg.CacheBytes, Started: cfg.Now()}}
	m.pending.Waits = make([]int64, len(telemetry.WaitBuckets)+1)
	return m
}

// ID is the node's id in the registry.
func (m *Member) ID() string { return m.node.ID }

// Leads reports whether this node leads its role: it is the live node of its role with
// the smallest id. Every node of the role reads the same registry, so one of them leads
// at a time (two callers can disagree only for the moment between a beat and a read);
// a node that has not beaten yet does not lead, and when the leader stops without
// leaving the next one leads once its entry lapses (the TTL).
func (m *Member) Leads(ctx context.Context) (bool, error) {
	nodes, err := m.reg.Nodes(ctx)
	if err != nil {
		return false, err
	}
	for _, n := range nodes { // by role, then id
		if n.Role == m.node.Role {
			return n.ID == m.node.ID, nil
		}
	}
	return false, nil
}

// Admitted records one admission that waited wait, reported with the next beat.
func (m *Member) Admitted(wait time.Duration) {
	i, _ := slices.BinarySearch(telemetry.WaitBuckets, wait.Seconds())
	m.mu.Lock()
	m.pending.Admissions++
	m.pending.Waits[i]++
	m.mu.Unlock()
}

// Run beats every interval until ctx ends, then leaves the registry.
func (m *Member) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	failing := false
	for {
		err := m.beat(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			m.log.Warn("heartbeat failed; operators will not see this node until it works again", "err", err)
			failing = true
		case err == nil && failing:
			m.log.Info("heartbeat works again")
			failing = false
		}
		select {
		case <-ctx.Done():
			leave, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := m.reg.Leave(leave, m.node.ID); err != nil {
				m.log.Debug("leave", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

func (m *Member) beat(ctx context.Context) error {
	n := m.node
	if m.cfg.InFlight != nil {
		n.InFlight = m.cfg.InFlight()
	}
	if m.cfg.Cache != nil {
		c := m.cfg.Cache()
		n.Cache = &c
	}
	m.mu.Lock()
	a := m.pending
	m.pending = Activity{Waits: make([]int64, len(a.Waits))}
	var bytesNow int64
	if m.cfg.BytesSent != nil {
		bytesNow = m.cfg.BytesSent()
		a.Bytes = bytesNow - m.lastBytes
	}
	m.mu.Unlock()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Every)
	defer cancel()
	if m.cfg.Levels != nil {
		// A third of the beat's time at most: a slow read leaves the beat itself room.
		lctx, lcancel := context.WithTimeout(bctx, m.cfg.Every/3)
		if l, err := m.cfg.Levels(lctx); err == nil {
			a.Levels = &l
		} else {
			m.log.Debug("admission levels left out of the heartbeat", "err", err)
		}
		lcancel()
	}
	if err := m.reg.Beat(bctx, n, a); err != nil {
		// Keep what was not reported for the next beat.
		m.mu.Lock()
		m.pending.Admissions += a.Admissions
		for i, w := range a.Waits {
			m.pending.Waits[i] += w
		}
		m.mu.Unlock()
		return err
	}
	m.mu.Lock()
	m.lastBytes = bytesNow
	m.mu.Unlock()
	return nil
}
