package telemetry

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dl/sluice/shared/admission"
)

// OtherTenants is the tenant label under which the tenants past the export cap are
// summed. It cannot be a tenant name (those are [a-z0-9_-]), so it never collides.
const OtherTenants = "(other)"

// StatsReader reads the admission snapshot (admission.Ledger does).
type StatsReader interface {
	Stats(ctx context.Context) (admission.Stats, error)
}

// LedgerCollector exports the admission ledger's figures, read at scrape time. One
// read serves every scrape within CacheFor, and a read is bounded by Timeout, so a
// slow Redis cannot hold scrapes (sluice_ledger_up then says 0).
//
// The figures are the whole system's, the same from every process that reads them;
// with Leader set, only the process it names exports them, so that Prometheus stores
// them once (the others export sluice_ledger_up alone).
type LedgerCollector struct {
	src        StatsReader
	leader     func(context.Context) (bool, error)
	timeout    time.Duration
	cacheFor   time.Duration
	maxTenants int
	now        func() time.Time

	mu     sync.Mutex
	last   admission.Stats
	leads  bool
	lastAt time.Time
	err    error

	tickets, ended, backlog, admissible, inUse, limit  *prometheus.Desc
	tenantInUse, tenantLimit, tenantQueued, paused, up *prometheus.Desc
}

// LedgerCollectorOptions tune a LedgerCollector; zero values take the defaults.
type LedgerCollectorOptions struct {
	// Leader says whether this process exports the figures now (fleet.Member.Leads:
	// the ingress with the smallest id); nil: it always does.
	Leader     func(context.Context) (bool, error)
	Timeout    time.Duration // bound of one ledger read (2s)
	CacheFor   time.Duration // how long one read serves scrapes (1s)
	MaxTenants int           // tenants exported by name, the busiest first (20); the rest are summed as OtherTenants
	Now        func() time.Time
}

// NewLedgerCollector returns a collector over src.
func NewLedgerCollector(src StatsReader, o LedgerCollectorOptions) *LedgerCollector {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.CacheFor <= 0 {
		o.CacheFor = time.Second
	}
	if o.MaxTenants <= 0 {
		o.MaxTenants = 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Leader == nil {
		o.Leader = func(context.Context) (bool, error) { return true, nil }
	}
	d := prometheus.NewDesc
	tenant := []string{"tenant"}
	return &LedgerCollector{
		src: src, leader: o.Leader, timeout: o.Timeout, cacheFor: o.CacheFor, maxTenants: o.MaxTenants, now: o.Now,
		tickets:      d(NameTickets, "Live tickets by state: queued, admitting, ready, streaming.", []string{"state"}, nil),
		ended:        d(NameTicketsEnded, "Tickets that ended, by state: done, expired, failed, canceled (rate of done: completions per second).", []string{"state"}, nil),
		backlog:      d(NameQueueBacklog, "Tickets waiting for a slot.", nil, nil),
		admissible:   d(NameQueueAdmissibleBacklog, "Waiting tickets that free slots would admit now (0 while paused): scale workers on this.", nil, nil),
		inUse:        d(NameSlotsInUse, "Download slots held now, system-wide.", nil, nil),
		limit:        d(NameSlotsLimit, "Global limit of download slots in force.", nil, nil),
		tenantInUse:  d(NameTenantSlotsInUse, "Slots held by a tenant (the busiest tenants by name, the rest as (other)).", tenant, nil),
		tenantLimit:  d(NameTenantSlotsLimit, "A tenant's own slot limit, 0 for none (for (other): the sum of their limits).", tenant, nil),
		tenantQueued: d(NameTenantQueued, "Tickets a tenant has waiting.", tenant, nil),
		paused:       d(NameAdmissionPaused, "1 while an operator has paused admission.", nil, nil),
		up:           d(NameLedgerUp, "1 if this process's last read of the admission ledger worked.", nil, nil),
	}
}

var _ prometheus.Collector = (*LedgerCollector)(nil)

// Describe implements prometheus.Collector.
func (c *LedgerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.tickets, c.ended, c.backlog, c.admissible, c.inUse, c.limit,
		c.tenantInUse, c.tenantLimit, c.tenantQueued, c.paused, c.up} {
		ch <- d
	}
}

// snapshot returns the figures, whether this process exports them, and the error of
// the reads.
func (c *LedgerCollector) snapshot() (admission.Stats, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.lastAt.IsZero() || now.Sub(c.lastAt) >= c.cacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		c.last = admission.Stats{}
		c.leads, c.err = c.leader(ctx)
		if c.err == nil && c.leads {
			c.last, c.err = c.src.Stats(ctx)
		}
		cancel()
		c.lastAt = now
	}
	return c.last, c.leads, c.err
}

// Collect implements prometheus.Collector.
func (c *LedgerCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s, leads, err := c.snapshot()
	if err != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	if !leads {
		return
	}
	for st, n := range s.Tickets {
		gauge(c.tickets, float64(n), string(st))
	}
	for st, n := range s.Ended {
		ch <- prometheus.MustNewConstMetric(c.ended, prometheus.CounterValue, float64(n), string(st))
	}
	gauge(c.backlog, float64(s.Backlog))
	gauge(c.admissible, float64(s.Admissible))
	gauge(c.inUse, float64(s.InUse))
	gauge(c.limit, float64(s.Limit))
	paused := 0.0
	if s.Paused {
		paused = 1
	}
	gauge(c.paused, paused)
	for _, t := range CapTenants(s.Tenants, c.maxTenants) {
		gauge(c.tenantInUse, float64(t.InUse), t.Name)
		gauge(c.tenantLimit, float64(t.Limit), t.Name)
		gauge(c.tenantQueued, float64(t.Queued), t.Name)
	}
}

// NamedTenant is one tenant's figures under its label.
type NamedTenant struct {
	Name string
	admission.TenantStats
}

// CapTenants keeps the max busiest tenants (slots held plus queued, then name) and
// sums the others under OtherTenants, so the label's cardinality stays bounded
// whatever the number of tenants.
func CapTenants(tenants map[string]admission.TenantStats, max int) []NamedTenant {
	all := make([]NamedTenant, 0, len(tenants))
	for name, t := range tenants {
		all = append(all, NamedTenant{name, t})
	}
	slices.SortFunc(all, func(a, b NamedTenant) int {
		if c := cmp.Compare(b.InUse+b.Queued, a.InUse+a.Queued); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if len(all) <= max {
		return all
	}
	other := NamedTenant{Name: OtherTenants}
	for _, t := range all[max:] {
		other.InUse += t.InUse
		other.Queued += t.Queued
		other.Limit += t.Limit
	}
	return append(all[:max:max], other)
}

// EdgeStats are the edge's running figures (signer.Edge.Stats, adapted in cmd).
type EdgeStats struct {
	Streams, Downloads, BytesSent, ZeroCopyBytes int64
}

// NewEdgeCollector exports an edge's counters, read at scrape time from stats.
func NewEdgeCollector(stats func() EdgeStats) prometheus.Collector {
	return &edgeCollector{
		stats:     stats,
		sent:      prometheus.NewDesc(NameEdgeSentBytes, "Object bytes sent to clients by this edge.", nil, nil),
		zeroCopy:  prometheus.NewDesc(NameEdgeZeroCopyBytes, "Of the bytes sent, those sent with sendfile(2) from local disk.", nil, nil),
		streams:   prometheus.NewDesc(NameEdgeActiveStreams, "Responses streaming object bytes now (a download with parallel ranges has several).", nil, nil),
		downloads: prometheus.NewDesc(NameEdgeActiveDownloads, "Distinct downloads streaming now.", nil, nil),
	}
}

type edgeCollector struct {
	stats                              func() EdgeStats
	sent, zeroCopy, streams, downloads *prometheus.Desc
}

func (c *edgeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sent
	ch <- c.zeroCopy
	ch <- c.streams
	ch <- c.downloads
}

func (c *edgeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(s.BytesSent))
	ch <- prometheus.MustNewConstMetric(c.zeroCopy, prometheus.CounterValue, float64(s.ZeroCopyBytes))
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(s.Streams))
	ch <- prometheus.MustNewConstMetric(c.downloads, prometheus.GaugeValue, float64(s.Downloads))
}

// EdgeCacheStats are an edge cache's running figures (edgecache.Cache.Stats, adapted
// in cmd). Hits include StaleHits.
type EdgeCacheStats struct {
	Hits, Misses, StaleHits, BytesFromCache, BytesFromOrigin int64
	Evictions, VerificationFailures, FillErrors              int64
	UsedBytes, CapacityBytes                                 int64
}

// NewEdgeCacheCollector exports an edge cache's counters, read at scrape time.
func NewEdgeCacheCollector(stats func() EdgeCacheStats) prometheus.Collector {
	return &edgeCacheCollector{stats: stats,
		requests: prometheus.NewDesc(NameEdgeCacheRequests, "Object reads by the edge: hit (from a verified copy on disk), miss (from the origin or a fill in progress), stale (hits answered while storage was unavailable, also counted as hits).", []string{"result"}, nil),
		bytes:    prometheus.NewDesc(NameEdgeCacheBytes, "Bytes the edge cache read, from its copies (cache) or from the object store (origin: fills and misses).", []string{"source"}, nil),
		evicted:  prometheus.NewDesc(NameEdgeCacheEvictions, "Copies removed to make room (least recently used first).", nil, nil),
		failed:   prometheus.NewDesc(NameEdgeCacheVerifyFailed, "Copies discarded because their SHA-256 did not match or their file changed after verification.", nil, nil),
		fillErrs: prometheus.NewDesc(NameEdgeCacheFillErrors, "Fills that failed (object store or local disk); those reads went to the origin.", nil, nil),
		used:     prometheus.NewDesc(NameEdgeCacheUsedBytes, "Bytes the cached copies take.", nil, nil),
		capacity: prometheus.NewDesc(NameEdgeCacheCapacityBytes, "Bytes the cache may take (--edge-cache-size).", nil, nil),
	}
}

type edgeCacheCollector struct {
	stats                                                      func() EdgeCacheStats
	requests, bytes, evicted, failed, fillErrs, used, capacity *prometheus.Desc
}

func (c *edgeCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.bytes, c.evicted, c.failed, c.fillErrs, c.used, c.capacity} {
		ch <- d
	}
}

func (c *edgeCacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.requests, s.Hits, "hit")
	counter(c.requests, s.Misses, "miss")
	counter(c.requests, s.StaleHits, "stale")
	counter(c.bytes, s.BytesFromCache, "cache")
	counter(c.bytes, s.BytesFromOrigin, "origin")
	counter(c.evicted, s.Evictions)
	counter(c.failed, s.VerificationFailures)
	counter(c.fillErrs, s.FillErrors)
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(s.UsedBytes))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(s.CapacityBytes))
}

// BreakerStates are the states a circuit breaker reports (objstore.Breaker.State).
var breakerStates = []string{"closed", "half-open", "open"}

// NewBreakerCollector exports circuit breakers' states, one-hot: for each breaker by
// name, sluice_breaker_state{breaker, state} is 1 for its current state, 0 otherwise.
func NewBreakerCollector(states map[string]func() string) prometheus.Collector {
	return &breakerCollector{states: states,
		desc: prometheus.NewDesc(NameBreakerState, "Circuit breaker state, one-hot over closed, half-open and open.", []string{"breaker", "state"}, nil)}
}

type breakerCollector struct {
	states map[string]func() string
	desc   *prometheus.Desc
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for name, state := range c.states {
		now := state()
		for _, st := range breakerStates {
			v := 0.0
			if st == now {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, name, st)
		}
	}
}

// NewHeldTickets exports how many ticket messages a worker holds.
func NewHeldTickets(held func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameHeldTickets,
		Help: "Ticket messages this worker holds in progress while their tickets wait or stream."},
		func() float64 { return float64(held()) })
}
