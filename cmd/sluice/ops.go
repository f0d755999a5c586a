package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/felixge/httpsnoop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/shared/token"
	"github.com/sluice-dl/sluice/signer"
)

// ops is what a process shows operators besides its metrics (built with the
// dependencies, deps.go): its tracer provider, the fleet registry its components join,
// and the collectors of process-wide figures. It is built once, right after the
// dependencies, and shut down last.
type ops struct {
	cfg     *serverConfig
	log     *slog.Logger
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing
	fleet   *fleet.Registry
}

func newOps(ctx context.Context, r role, c *serverConfig, d *deps, log *slog.Logger) (*ops, error) {
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
	o := &ops{cfg: c, log: log, metrics: d.metrics, tracing: tracing, fleet: fleet.New(d.rdb, fleet.Config{})}
	breakers := map[string]func() string{"redis": d.rdbCB.State}
	if d.storeCB != nil {
		breakers["objects"] = d.storeCB.State
	}
	o.metrics.Registry.MustRegister(telemetry.NewBreakerCollector(breakers))
	return o, nil
}

// shutdown flushes the traces still buffered.
func (o *ops) shutdown(ctx context.Context) {
	if err := o.tracing.Shutdown(ctx); err != nil {
		o.log.Warn("traces were lost at shutdown", "err", err)
	}
}

// memberConfig describes one component for the fleet registry. addr is where
// operators reach it: a listen address, the host name put in for an unspecified host.
func (o *ops) memberConfig(role, addr string, inFlight, bytesSent func() int64) fleet.MemberConfig {
	return fleet.MemberConfig{Role: role, Version: version, Address: advertised(addr),
		InFlight: inFlight, BytesSent: bytesSent, Logger: o.log}
}

// member is one component's entry in the fleet registry; Run keeps it there.
func (o *ops) member(cfg fleet.MemberConfig) *fleet.Member { return o.fleet.Join(cfg) }

// opsMux is the routes of an operations port (a worker's --metrics-addr, the edge's
// --edge-metrics-addr): /metrics, /healthz, /readyz, with --pprof Go's profiles, and extra.
func (o *ops) opsMux(ready http.Handler, extra map[string]http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metrics.Handler())
	mux.HandleFunc("GET /healthz", health.Live)
	mux.Handle("GET /readyz", ready)
	if o.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // and the named profiles: heap, block, mutex, goroutine
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	for pattern, h := range extra {
		mux.Handle(pattern, h)
	}
	return mux
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

// countConns counts the open client connections of the server named server, then
// calls next (nil: nothing more).
func (o *ops) countConns(server string, next func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	g := o.metrics.HTTPOpenConnections.WithLabelValues(server)
	return func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			g.Inc()
		case http.StateHijacked, http.StateClosed:
			g.Dec()
		}
		if next != nil {
			next(c, s)
		}
	}
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

// edgeObserver counts refusals and gives each stream a span in its ticket's trace.
func (o *ops) edgeObserver() signer.EdgeObserver {
	return &edgeObserver{m: o.metrics, tracer: o.tracing.Tracer("signer"), log: o.log.With("component", "edge")}
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

func (eo *edgeObserver) Streaming(ctx context.Context, c token.Claims) (context.Context, func(error)) {
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
		case "GET /healthz", "GET /readyz":
			return
		}
		level := telemetry.RequestLevel(m.Code)
		if !log.Enabled(r.Context(), level) {
			return // the routine line is filtered out: build nothing for it
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
		log.Log(r.Context(), level, "request", attrs...)
	})
}
