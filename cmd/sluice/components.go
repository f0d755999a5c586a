package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/edgecache"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/signer"
	"github.com/sluice-dl/sluice/workers"
)

// The components of the server roles (roleComponents in server.go). Each constructor
// builds its component whole, opening its ports; Start runs it.

// ingressComponent is the public API.
type ingressComponent struct {
	p    *process
	srv  *ingress.Server
	api  *listener
	beat heartbeat
}

func newIngressComponent(p *process) (component, error) {
	c, d, o, log := p.cfg, p.deps, p.ops, p.log
	adminKey := c.AdminKey
	if adminKey == "" && p.role == roleServe {
		adminKey = apikeys.Generate()
		// Printed once for the person at the terminal, never into the log stream.
		fmt.Fprintf(os.Stdout, "\n  operator API key for this run: %s\n  (set SLUICE_ADMIN_KEY to choose your own)\n\n", adminKey)
	} else if adminKey == "" {
		log.Warn("no SLUICE_ADMIN_KEY: only keys already stored in JetStream can use the admin API")
	}
	keys := apikeys.New(d.records.keys, adminKey)
	publisher, err := queue.NewPublisher(d.nc, p.api.publish, 5*time.Second)
	if err != nil {
		return nil, err
	}
	importCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if n, err := keys.ImportRedis(importCtx, d.rdb, ""); err != nil {
		log.Warn("not every API key an earlier version kept in Redis was imported into JetStream: those answer 401 (an unreadable one for good; after an outage, until a start imports them)", "imported", n, "err", err)
	} else if n > 0 {
		log.Info("imported API keys from Redis into JetStream (kept there by an earlier version)", "keys", n)
	}
	cancel()
	srv := ingress.New(ingress.Config{
		Keys:             keys,
		Tickets:          queue.NewTickets(d.js),
		RequireClientKey: c.RequireClientKey,
		FilesWait:        c.FilesWait,
		StatCache:        c.StatCache,
		TicketRate:       p.api.ticketRate,
		TicketLimiter:    redis_rate.NewLimiter(d.rdb),
		TrustedProxies:   p.api.trustedProxies,
		CORSOrigins:      p.api.corsOrigins,
		Objects:          d.store,
		Ledger:           d.ledger,
		Publisher:        o.publisher(publisher),
		Checks: []health.Check{
			{Name: "nats", Ping: func(ctx context.Context) error { return queue.Ping(ctx, d.js) }},
			{Name: "redis", Ping: d.ledger.Ping},
			{Name: "storage", Ping: d.store.Ping},
		},
		Logger: log,
		Ops:    &ingress.Ops{Metrics: o.metrics, Tracing: o.tracing, Fleet: o.fleet},
		// A link whose edge has gone is moved to a live one when its client asks.
		Edges: fleet.NewEdgeChooser(o.fleet, time.Second, log),
		// The publish API, the catalog and the catalog check of downloads.
		Releases: p.rel.ingressConfig(),
		Uploads:  ingress.UploadsConfig{Store: d.store, MaxSize: c.MaxUploadSize},
		// Slow and large bodies (ingress/bounds.go).
		BodyTimeout:    cmp.Or(c.BodyTimeout, -1), // the flag's 0 is "no bound", Config's the default
		BodyMinRate:    c.BodyMinRate,
		MaxLargeBodies: c.MaxLargeBodies,
	})
	api, err := p.listen("ingress", c.IngressAddr, srv.Handler(), listenConfig{public: true, exempt: prefixes(p.api.trustedProxies)})
	if err != nil {
		return nil, err
	}
	member := o.memberConfig("ingress", api.ln.Addr().String(), nil, nil)
	// The backlog and slots every second for the dashboard's history: the shared
	// snapshot, so the fleet computes it once a second however many ingresses run.
	member.Levels = func(ctx context.Context) (fleet.Levels, error) {
		st, err := d.ledger.SharedStats(ctx)
		return fleet.Levels{Backlog: st.Backlog, Admissible: st.Admissible, SlotsInUse: st.InUse, Limit: st.Limit}, err
	}
	beat := heartbeat{m: o.member(member)}
	// The ledger's figures are the whole system's: the leading ingress exports them.
	o.metrics.Registry.MustRegister(telemetry.NewLedgerCollector(d.ledger, telemetry.LedgerCollectorOptions{Leader: beat.m.Leads}))
	return &ingressComponent{p: p, srv: srv, api: api, beat: beat}, nil
}

func (i *ingressComponent) Start(ctx context.Context) {
	i.api.start(i.p)
	i.beat.start(ctx)
}

func (i *ingressComponent) Drain() { i.srv.Drain() }

func (i *ingressComponent) Shutdown(ctx context.Context) error {
	i.api.stop(ctx, i.p.log)
	i.beat.stop()
	return nil
}

// catalogComponent keeps the process' in-process copy of the release catalog
// (catalog.Follow), which the ingress checks downloads against and serve's edge cache
// checks copies against.
type catalogComponent struct {
	p   *process
	run runner
}

func newCatalogComponent(p *process) (component, error) { return &catalogComponent{p: p}, nil }

func (cc *catalogComponent) Start(ctx context.Context) {
	cat := cc.p.rel.catalog
	cc.run.start(ctx, cc.p, "follow the release catalog", func(ctx context.Context) error { return cat.Follow(ctx, cc.p.log) })
}

func (cc *catalogComponent) Shutdown(ctx context.Context) error { return cc.run.stop(ctx) }

// edgeComponent is the streaming edge: /d/{token} on its public port, /metrics and
// /debug/edge on its operations port (--edge-metrics-addr), which clients never reach.
type edgeComponent struct {
	p       *process
	public  *listener
	ops     *listener // nil without --edge-metrics-addr
	edge    *signer.Edge
	cache   io.Closer // the disk cache, closed after the last stream; nil without --edge-cache-dir
	ready   *health.Probe
	beat    heartbeat
	entries *edgeEntries // the catalog its cache checks copies against; nil in serve (its catalog component follows it) and without NATS
	catalog runner
}

func newEdgeComponent(p *process) (component, error) {
	c, d, o := p.cfg, p.deps, p.ops
	store, cache, entries, err := edgeStore(d, c, p.rel, o)
	if err != nil {
		return nil, err
	}
	e := signer.NewEdge(signer.EdgeConfig{
		Keyring: d.keyring,
		Store:   store,
		Slots:   d.ledger,
		Logger:  p.log,
		// Renew three times per lease; stop streaming on a ledger outage before the
		// lease could lapse and the slot be granted to someone else.
		RenewEvery:    c.StreamLease / 3,
		RenewGrace:    c.StreamLease * 2 / 3,
		IdleTimeout:   c.IdleTimeout,
		MinRate:       c.MinRate,
		MinRateWindow: c.MinRateWindow,
		DownloadRate:  c.DownloadRate,
		EgressRate:    c.EgressRate,
		Observer:      o.edgeObserver(),
		Revalidate:    c.EdgeRevalidate,
	})
	ec := &edgeComponent{p: p, edge: e, cache: cache, entries: entries,
		ready: health.NewProbe(p.log.With("component", "edge"), health.Check{Name: "redis", Ping: d.ledger.Ping}, health.Check{Name: "storage", Ping: d.store.Ping})}
	mux := http.NewServeMux()
	mux.Handle("/", e.Handler())
	mux.Handle("GET /readyz", ec.ready.Public())
	// The edge keeps per-connection state (the verified token, the ledger hold).
	edgeConns := listenConfig{public: true, connContext: e.ConnContext, connState: e.ConnState}
	if ec.public, err = p.listen("edge", c.EdgeAddr, o.edgeHTTP(mux), edgeConns); err != nil {
		ec.closeCache()
		return nil, err
	}
	if c.EdgeMetricsAddr != "" {
		debug := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_ = json.NewEncoder(w).Encode(e.Stats()) // counts only
		})
		ops := o.opsMux(ec.ready, map[string]http.Handler{"GET /debug/edge": debug})
		if ec.ops, err = p.listen("edge-metrics", c.EdgeMetricsAddr, ops, listenConfig{}); err != nil {
			ec.public.stop(context.Background(), p.log)
			ec.closeCache()
			return nil, err
		}
	}
	stats := func() telemetry.EdgeStats {
		s := e.Stats()
		return telemetry.EdgeStats{Streams: s.Streams, Downloads: int64(s.Downloads), BytesSent: s.BytesSent, ZeroCopyBytes: s.ZeroCopyBytes}
	}
	o.metrics.Registry.MustRegister(telemetry.NewEdgeCollector(stats))
	member := o.memberConfig("edge", ec.public.ln.Addr().String(),
		func() int64 { return e.Stats().Streams }, func() int64 { return e.Stats().BytesSent })
	// What edge choice weighs this edge by (workers with --edge-affinity).
	member.PublicURL, member.CacheBytes = strings.TrimRight(c.EdgeAdvertise, "/"), cacheBytes(c)
	if cache, ok := store.(*edgecache.Cache); ok { // its figures on the dashboard
		member.Cache = func() fleet.CacheFigures {
			s := cache.Stats()
			return fleet.CacheFigures{Hits: s.Hits, Misses: s.Misses, BytesFromCache: s.BytesFromCache, BytesFromOrigin: s.BytesFromOrigin}
		}
	}
	ec.beat.m = o.member(member)
	return ec, nil
}

func (ec *edgeComponent) Start(ctx context.Context) {
	if ec.entries != nil {
		ec.catalog.start(ctx, ec.p, "follow the release catalog", ec.entries.run)
	}
	ec.public.start(ec.p)
	if ec.ops != nil {
		ec.ops.start(ec.p)
	}
	ec.beat.start(ctx)
}

func (ec *edgeComponent) Drain() { ec.ready.Drain() }

// Shutdown lets running streams finish within ctx; the operations port stays up
// meanwhile, so their last bytes are counted.
func (ec *edgeComponent) Shutdown(ctx context.Context) error {
	ec.public.stop(ctx, ec.p.log)
	// The keep-alive connections' ledger holds end once the listener has stopped.
	ec.edge.Close(ctx)
	ec.closeCache()
	ec.beat.stop()
	ec.ops.stop(ctx, ec.p.log)
	return ec.catalog.stop(ctx)
}

func (ec *edgeComponent) closeCache() {
	if ec.cache == nil {
		return
	}
	if err := ec.cache.Close(); err != nil {
		ec.p.log.Warn("closing the edge cache", "err", err)
	}
}

// admissionComponent is the admission worker; a worker process also has an
// operations port (--metrics-addr) for /metrics and its probes.
type admissionComponent struct {
	p     *process
	adm   *workers.Admission
	ops   *listener // nil in serve: its /metrics is the ingress'
	ready *health.Probe
	beat  heartbeat
	run   runner
}

func newAdmissionComponent(p *process) (component, error) {
	c, d, o := p.cfg, p.deps, p.ops
	var direct workers.Presigner
	if c.DirectDownloads {
		if d.s3 == nil {
			return nil, errors.New("--direct-downloads needs objects in S3/MinIO: set --s3-endpoint and its credentials")
		}
		direct = d.s3
		p.log.Info("direct mode: links are presigned storage URLs; no throttling, slots lapse at the link's expiry")
	}
	a := &admissionComponent{p: p, ready: health.NewProbe(p.log.With("component", "admission"),
		health.Check{Name: "nats", Ping: func(ctx context.Context) error { return queue.Ping(ctx, d.js) }},
		health.Check{Name: "redis", Ping: d.ledger.Ping})}
	addr := c.IngressAddr // serve: /metrics is on the ingress
	if c.MetricsAddr != "" {
		var err error
		if a.ops, err = p.listen("metrics", c.MetricsAddr, o.opsMux(a.ready, nil), listenConfig{}); err != nil {
			return nil, err
		}
		addr = a.ops.ln.Addr().String()
	}
	a.beat.m = o.member(o.memberConfig("worker", addr, func() int64 { return int64(a.adm.Held()) }, nil))
	a.adm = workers.NewAdmission(workers.AdmissionConfig{
		Direct:        direct,
		Consumer:      d.tickets,
		Acker:         queue.NewAcker(d.js.Conn()),
		Backlog:       queue.NewTickets(d.js),
		Ledger:        d.ledger,
		Tokens:        d.keyring,
		PublicEdgeURL: strings.TrimRight(c.PublicEdgeURL, "/"),
		Edges:         o.edgeChooser(c.EdgeAffinity),
		TokenTTL:      c.TokenTTL,
		AckWait:       c.TicketAckWait,
		Logger:        p.log,
		Tracer:        o.tracing.Tracer("workers"),
		// Each admission in the metrics and the fleet's activity window.
		OnAdmitted: func(wait time.Duration) {
			o.metrics.Admitted(wait)
			a.beat.m.Admitted(wait)
		},
	})
	o.metrics.Registry.MustRegister(telemetry.NewHeldTickets(a.adm.Held))
	return a, nil
}

// Start rebuilds a new or lost ledger before it returns (so an ingress started after
// it finds one), then consumes tickets.
func (a *admissionComponent) Start(ctx context.Context) {
	a.adm.Prepare(ctx)
	if a.ops != nil {
		a.ops.start(a.p)
	}
	a.beat.start(ctx)
	a.run.start(ctx, a.p, "admission worker", a.adm.Run)
}

func (a *admissionComponent) Drain() { a.ready.Drain() }

// Shutdown stops fetching and hands the held tickets back to the stream.
func (a *admissionComponent) Shutdown(ctx context.Context) error {
	err := a.run.stop(ctx)
	a.beat.stop()
	a.ops.stop(ctx, a.p.log)
	return err
}

// releasesComponent verifies release events against the store.
type releasesComponent struct {
	p   *process
	w   *workers.Releases
	run runner
}

func newReleasesComponent(p *process) (component, error) {
	c, d, rel := p.cfg, p.deps, p.rel
	w := workers.NewReleases(workers.ReleasesConfig{
		Consumer: rel.consumer, Store: d.store, Catalog: rel.catalog, Dead: rel.dead,
		Bucket: rel.bucket, Prefix: rel.prefix, Parallel: rel.cfg.Parallel, MaxAttempts: rel.cfg.Attempts,
		AckWait: c.AckWait, Logger: p.log,
		OnOutcome: func(outcome string) { p.ops.metrics.ReleaseEvents.WithLabelValues(outcome).Inc() },
	})
	return &releasesComponent{p: p, w: w}, nil
}

func (r *releasesComponent) Start(ctx context.Context) {
	r.run.start(ctx, r.p, "release worker", r.w.Run)
}

// Shutdown stops fetching and lets the events being verified finish within ctx.
func (r *releasesComponent) Shutdown(ctx context.Context) error { return r.run.stop(ctx) }

// readyAnnouncer tells the person at serve's terminal when the API and the edge
// answer ready, and what to try. runServer adds it to serve's components, last.
type readyAnnouncer struct {
	p         *process
	api, edge *listener
	run       runner
}

func newReadyAnnouncer(p *process, comps []component) *readyAnnouncer {
	ra := &readyAnnouncer{p: p}
	for _, c := range comps {
		switch c := c.(type) {
		case *ingressComponent:
			ra.api = c.api
		case *edgeComponent:
			ra.edge = c.public
		}
	}
	return ra
}

func (ra *readyAnnouncer) Start(ctx context.Context) {
	api, edge := ra.api, ra.edge
	if loopbackOnly(api) || loopbackOnly(edge) {
		ra.p.log.Info("listening on this machine only; to listen on every interface set SLUICE_INGRESS_ADDR=:8080 and SLUICE_EDGE_ADDR=:8081 (or --ingress-addr, --edge-addr), and SLUICE_PUBLIC_EDGE_URL to the edge's address as clients reach it")
	}
	msg := "sluice is ready; try: curl -si -X POST localhost" + portOf(api) + "/api/v1/downloads -d '{\"object\":\"demo/hello.txt\"}'"
	// The API first: it is what the person at the terminal calls.
	ra.run.start(ctx, ra.p, "ready announcement", func(ctx context.Context) error {
		announceReady(ctx, ra.p.log, []*listener{api, edge}, msg)
		return nil
	})
}

func (ra *readyAnnouncer) Shutdown(ctx context.Context) error { return ra.run.stop(ctx) }

// runner owns one long-running function of a component: start runs it until stop.
type runner struct {
	what   string
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs fn in a goroutine, with a context that ends at stop (not with ctx: the
// process decides when its components stop). An error fn returns is fatal to the
// process, named by what.
func (r *runner) start(ctx context.Context, p *process, what string, fn func(context.Context) error) {
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.what, r.done = what, make(chan struct{})
	go func() {
		defer close(r.done)
		if err := fn(ctx); err != nil {
			p.fail(fmt.Errorf("%s: %w", what, err))
		}
	}()
}

// stop ends fn's context and waits for it to return, at most until ctx ends.
func (r *runner) stop(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: still running at the shutdown deadline", r.what)
	}
}

// heartbeat keeps a component's entry in the fleet registry from start until stop,
// when it leaves the registry.
type heartbeat struct {
	m   *fleet.Member
	run runner
}

func (h *heartbeat) start(ctx context.Context) {
	h.run.start(ctx, nil, "heartbeat", func(ctx context.Context) error { h.m.Run(ctx); return nil })
}

func (h *heartbeat) stop() { _ = h.run.stop(context.Background()) }
