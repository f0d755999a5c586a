package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felixge/httpsnoop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/connlimit"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/signer"
	"github.com/sluice-dl/sluice/workers"
)

// ops is what a process shows operators: its metrics registry, its tracer provider
// and its entries in the fleet registry. It is built once per process, right after
// the dependencies, and closed last.
type ops struct {
	role    role
	cfg     *serverConfig
	log     *slog.Logger
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing
	fleet   *fleet.Registry

	ctx     context.Context // ends when ops closes: stops the heartbeats
	stop    context.CancelFunc
	wg      sync.WaitGroup
	worker  atomic.Pointer[fleet.Member]
	front   atomic.Pointer[fleet.Member] // its ingress's entry: the leading one exports the ledger's figures
	servers []*http.Server               // a worker's metrics listener
	conns   *connlimit.Limiter           // the per-address cap of the process's listeners

	// edgeAdvert is what an edge advertises for edge choice (PublicURL, CacheBytes).
	edgeAdvert fleet.MemberConfig
}

func startOps(ctx context.Context, r role, c *serverConfig, d *deps, log *slog.Logger) (*ops, error) {
	tc, err := tracingConfig(c, r, os.Getenv)
	if err != nil {
		return nil, err
	}
	tracing, err := telemetry.NewTracing(ctx, tc)
	if err != nil {
		return nil, err
	}
	if tc.Export {
		endpoint := tc.Endpoint
		if endpoint == "" {
			endpoint = "from OTEL_EXPORTER_OTLP_*ENDPOINT"
		}
		log.Info("exporting traces over OTLP", "protocol", tc.Protocol, "endpoint", endpoint)
	}
	o := &ops{role: r, cfg: c, log: log, metrics: telemetry.NewMetrics(r.String(), version), tracing: tracing,
		fleet: fleet.New(d.rdb, fleet.Config{})}
	o.metrics.Token = c.MetricsToken
	o.ctx, o.stop = context.WithCancel(context.WithoutCancel(ctx))
	d.rdb.AddHook(o.metrics.RedisHook(admission.Scripts(), catalog.Scripts(), fleet.Scripts()))
	breakers := map[string]func() string{"redis": d.rdbCB.State}
	if d.store != nil {
		if b, ok := d.store.(*objstore.Breaker); ok {
			breakers["objects"] = b.State
		}
		d.store = o.metrics.InstrumentStore(d.store)
	}
	o.metrics.Registry.MustRegister(telemetry.NewBreakerCollector(breakers))
	if r == roleServe || r == roleIngress {
		// The ledger's figures are the whole system's: the leading ingress exports them.
		o.metrics.Registry.MustRegister(telemetry.NewLedgerCollector(d.ledger, telemetry.LedgerCollectorOptions{Leader: o.leadsIngresses}))
	}
	return o, nil
}

// close stops the heartbeats (leaving the registry), the metrics listener, and
// flushes the traces still buffered.
func (o *ops) close() {
	o.stop()
	o.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range o.servers {
		_ = s.Shutdown(ctx)
	}
	if err := o.tracing.Shutdown(ctx); err != nil {
		o.log.Warn("traces were lost at shutdown", "err", err)
	}
}

// join registers one role of this process in the fleet while ops runs.
func (o *ops) join(role, addr string, inFlight, bytesSent func() int64) *fleet.Member {
	cfg := fleet.MemberConfig{Role: role, Version: version, Address: advertised(addr),
		InFlight: inFlight, BytesSent: bytesSent, Logger: o.log}
	if role == fleet.RoleEdge {
		cfg.PublicURL, cfg.CacheBytes = o.edgeAdvert.PublicURL, o.edgeAdvert.CacheBytes
	}
	m := o.fleet.Join(cfg)
	o.wg.Go(func() { m.Run(o.ctx) })
	return m
}

// advertised turns a listen address into one operators can reach: the host name
// where the listener took every interface.
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// watchConns counts the open client connections of l's server.
func (o *ops) watchConns(l *listener) {
	if l == nil {
		return
	}
	g := o.metrics.HTTPOpenConnections.WithLabelValues(l.name)
	prev := l.srv.ConnState
	l.srv.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			g.Inc()
		case http.StateHijacked, http.StateClosed:
			g.Dec()
		}
		if prev != nil {
			prev(c, s)
		}
	}
}

// ingress wires the API's metrics, traces, fleet view and dashboard.
func (o *ops) ingress() *ingress.Ops {
	return &ingress.Ops{Metrics: o.metrics, Tracing: o.tracing, Fleet: o.fleet}
}

// joinIngress registers the ingress and counts its connections.
func (o *ops) joinIngress(l *listener) {
	o.watchConns(l)
	o.front.Store(o.join("ingress", l.ln.Addr().String(), nil, nil))
}

// leadsIngresses says whether this process's ingress leads the fleet's ingresses.
func (o *ops) leadsIngresses(ctx context.Context) (bool, error) {
	m := o.front.Load()
	if m == nil {
		return false, nil
	}
	return m.Leads(ctx)
}

// publisher times the ticket publishes (publish to PubAck).
func (o *ops) publisher(p *queue.Publisher) ingress.Publisher {
	return &timedPublisher{inner: p, hist: o.metrics.NATSPublish.WithLabelValues(queue.TicketStream),
		errs: o.metrics.NATSErrors.WithLabelValues(queue.TicketStream)}
}

type timedPublisher struct {
	inner *queue.Publisher
	hist  interface{ Observe(float64) }
	errs  interface{ Inc() }
}

func (p *timedPublisher) Publish(ctx context.Context, t queue.Ticket) (uint64, error) {
	start := time.Now()
	seq, err := p.inner.Publish(ctx, t)
	p.hist.Observe(time.Since(start).Seconds())
	if err != nil {
		p.errs.Inc()
	}
	return seq, err
}

// releaseOutcome counts one release event's outcome.
func (o *ops) releaseOutcome(outcome string) {
	o.metrics.ReleaseEvents.WithLabelValues(outcome).Inc()
}

// tracer is a component's tracer.
func (o *ops) tracer(component string) trace.Tracer { return o.tracing.Tracer(component) }

// admitted records one admission in the metrics and the fleet's activity window.
func (o *ops) admitted(wait time.Duration) {
	o.metrics.Admitted(wait)
	if m := o.worker.Load(); m != nil {
		m.Admitted(wait)
	}
}

// joinWorker registers the admission worker; a worker process on its own also gets a
// small HTTP listener for /metrics (--metrics-addr), with /healthz and /readyz (ready)
// for its probes. Call it before adm runs.
func (o *ops) joinWorker(adm *workers.Admission, api *listener, ready http.HandlerFunc) error {
	o.metrics.Registry.MustRegister(telemetry.NewHeldTickets(adm.Held))
	addr := ""
	if api != nil {
		addr = api.ln.Addr().String() // serve: /metrics is on the ingress
	}
	if o.role == roleWorker && o.cfg.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", o.metrics.Handler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.Handle("GET /readyz", ready)
		ln, err := net.Listen("tcp", o.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w", o.cfg.MetricsAddr, err)
		}
		srv := httpServer(mux)
		o.servers = append(o.servers, srv)
		ln = o.conns.Listen(ln)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				o.log.Error("metrics listener stopped", "err", err)
			}
		}()
		addr = ln.Addr().String()
		o.log.Info("listening", "server", "metrics", "addr", addr)
	}
	o.worker.Store(o.join("worker", addr, func() int64 { return int64(adm.Held()) }, nil))
	return nil
}

// edgeObserver counts refusals and gives each stream a span in its ticket's trace.
func (o *ops) edgeObserver() signer.EdgeObserver {
	return &edgeObserver{m: o.metrics, tracer: o.tracer("signer"), log: o.log.With("component", "edge")}
}

// joinEdge exports the edge's counters, registers it and counts its connections.
func (o *ops) joinEdge(e *signer.Edge, l *listener) {
	stats := func() telemetry.EdgeStats {
		s := e.Stats()
		return telemetry.EdgeStats{Streams: s.Streams, Downloads: int64(s.Downloads), BytesSent: s.BytesSent, ZeroCopyBytes: s.ZeroCopyBytes}
	}
	o.metrics.Registry.MustRegister(telemetry.NewEdgeCollector(stats))
	o.watchConns(l)
	o.join("edge", l.ln.Addr().String(), func() int64 { return e.Stats().Streams }, func() int64 { return e.Stats().BytesSent })
}

type edgeObserver struct {
	m      *telemetry.Metrics
	tracer trace.Tracer
	log    *slog.Logger
}

func (eo *edgeObserver) Refused(ctx context.Context, reason string) {
	if reason != "" {
		eo.m.Rejected(reason)
	}
	if n := noteOf(ctx); n != nil {
		n.refusal = reason
	}
}

func (eo *edgeObserver) Streaming(ctx context.Context, c signer.Claims) (context.Context, func(error)) {
	ctx, span := eo.tracer.Start(telemetry.WithTraceParent(ctx, c.Trace), "stream",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("sluice.ticket", c.Ticket), attribute.String("sluice.tenant", c.Tenant)))
	if n := noteOf(ctx); n != nil {
		n.ticket = c.Ticket
		n.traceID = trace.SpanContextFromContext(ctx).TraceID()
	}
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// requestNote is filled by the edge's observer while a request runs, for its log line.
type requestNote struct {
	ticket  string
	refusal string
	traceID trace.TraceID
}

type noteKey struct{}

func noteOf(ctx context.Context) *requestNote {
	n, _ := ctx.Value(noteKey{}).(*requestNote)
	return n
}

// edgeHTTP logs one line per edge request and records its metrics. It never logs the
// URL: the path holds the download token. The route is the matched pattern
// ("GET /d/{token}"). httpsnoop keeps the writer's optional interfaces (io.ReaderFrom
// for sendfile, Flush, the ResponseController's Unwrap).
func (o *ops) edgeHTTP(h http.Handler) http.Handler {
	log := o.log.With("component", "edge")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note := &requestNote{}
		r = r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		m := httpsnoop.CaptureMetrics(h, w, r)
		route := r.Pattern
		o.metrics.ObserveRequest("edge", route, m.Code, m.Duration)
		switch route {
		case "GET /healthz", "GET /readyz", "GET /metrics":
			return
		}
		attrs := []any{"method", r.Method, "route", route, "status", m.Code, "bytes", m.Written,
			"duration", m.Duration.Round(time.Microsecond)}
		if note.ticket != "" {
			attrs = append(attrs, "ticket", note.ticket)
		}
		if note.refusal != "" {
			attrs = append(attrs, "refused", note.refusal)
		}
		if note.traceID.IsValid() {
			attrs = append(attrs, "trace_id", note.traceID.String())
		}
		log.Info("request", attrs...)
	})
}
