package ingress

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/otel/propagation"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// Ops is what the ingress offers operators besides the admin API: Prometheus metrics
// at /metrics, request traces, the fleet's registry and the dashboard. Any nil field
// turns its part off.
type Ops struct {
	Metrics *telemetry.Metrics
	Tracing *telemetry.Tracing
	Fleet   Fleet
}

// Fleet is the part of the fleet registry the ingress reads.
type Fleet interface {
	Nodes(ctx context.Context) ([]fleet.Node, error)
	Window(ctx context.Context, seconds int) ([]fleet.Second, error)
}

// observe is the outermost middleware: a trace span per request when traces are
// exported (continuing the client's traceparent, if any; without an exporter only the
// traceparent is carried) and the request metrics, which see the final status.
func (s *Server) observe() []gin.HandlerFunc {
	o := s.cfg.Ops
	if o == nil {
		return nil
	}
	var hs []gin.HandlerFunc
	if o.Metrics != nil {
		m := o.Metrics
		hs = append(hs, func(c *gin.Context) {
			start := time.Now()
			c.Next()
			m.ObserveRequest("ingress", c.FullPath(), c.Writer.Status(), time.Since(start))
		})
	}
	switch {
	case o.Tracing != nil && o.Tracing.Exports():
		hs = append(hs, otelgin.Middleware("sluice-ingress",
			otelgin.WithTracerProvider(o.Tracing.Provider()),
			otelgin.WithPropagators(telemetry.Propagator()),
			otelgin.WithFilter(func(r *http.Request) bool {
				switch r.URL.Path {
				case "/healthz", "/readyz", "/metrics":
					return false
				}
				return true
			})))
	case o.Tracing != nil:
		// No spans are exported, so none is started (otelgin's span, attributes and
		// metrics were a tenth of the ingress's CPU per ticket): only the client's
		// traceparent is carried, into the ticket and on to the worker and the edge.
		hs = append(hs, func(c *gin.Context) {
			if c.GetHeader("traceparent") != "" {
				ctx := telemetry.Propagator().Extract(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header))
				c.Request = c.Request.WithContext(ctx)
			}
			c.Next()
		})
	}
	return hs
}

// routeOps adds /metrics and the dashboard.
func (s *Server) routeOps(r *gin.Engine) {
	if o := s.cfg.Ops; o != nil && o.Metrics != nil {
		r.GET("/metrics", gin.WrapH(o.Metrics.Handler()))
	}
	s.routeDashboard(r)
}

// listNodes answers GET /api/v1/admin/workers: every worker, edge and ingress that
// beat within the registry's TTL.
func (s *Server) listNodes(c *gin.Context) {
	out := api.Nodes{Nodes: []api.Node{}}
	f := s.fleet()
	if f == nil {
		c.JSON(http.StatusOK, out)
		return
	}
	nodes, err := f.Nodes(c.Request.Context())
	if err != nil {
		c.Error(redisUnavailable("the fleet registry", err)) // the registry is derived state in Redis
		return
	}
	now := time.Now()
	for _, n := range nodes {
		v := api.Node{ID: n.ID, Role: n.Role, Version: n.Version, Address: n.Address,
			InFlight: n.InFlight, Started: n.Started, LastBeat: n.LastBeat,
			AgeSeconds: max(now.Sub(n.LastBeat), 0).Round(time.Millisecond).Seconds()}
		if c := n.Cache; c != nil {
			v.Cache = &api.NodeCache{Hits: c.Hits, Misses: c.Misses, BytesFromCache: c.BytesFromCache, BytesFromOrigin: c.BytesFromOrigin}
			if reads := c.Hits + c.Misses; reads > 0 {
				v.Cache.HitRatio = float64(c.Hits) / float64(reads)
			}
		}
		out.Nodes = append(out.Nodes, v)
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) fleet() Fleet {
	if s.cfg.Ops == nil {
		return nil
	}
	return s.cfg.Ops.Fleet
}

// statsWindow is how many seconds of fleet activity the stats summarize (wait
// percentiles); rates are over the last statsRateSeconds of it.
const (
	statsWindow      = 60
	statsRateSeconds = 5
)

// wireStats is the admin stats: the ledger's snapshot (the one conversion from it to
// the wire), the fleet's recent activity (rates, wait percentiles) and who is running.
func (s *Server) wireStats(ctx context.Context, st admission.Stats) api.Stats {
	s.idleTenants(ctx, st.Tenants) // tenants with nothing queued or held are shown too
	v := api.Stats{
		Paused: st.Paused, GlobalLimit: st.Limit, SlotsInUse: st.InUse, Backlog: st.Backlog, Admissible: st.Admissible,
		Rate: st.Rate, Tenants: make(map[string]api.TenantStats, len(st.Tenants)),
		Tickets: counts(st.Tickets), Ended: counts(st.Ended), Nodes: map[string]int{}, At: time.Now().UTC(),
	}
	for name, ts := range st.Tenants {
		v.Tenants[name] = api.TenantStats(ts)
	}
	f := s.fleet()
	if f == nil {
		return v
	}
	// The ledger figures are what matters; the fleet's are best effort.
	if secs, err := f.Window(ctx, statsWindow); err == nil {
		a := api.Activity(fleet.Summarize(secs, statsRateSeconds))
		v.Activity = &a
	} else {
		s.log.WarnContext(ctx, "read fleet activity", "err", err)
	}
	if nodes, err := f.Nodes(ctx); err == nil {
		for _, n := range nodes {
			v.Nodes[n.Role]++
			if n.Role == "edge" {
				v.EdgeStreams += n.InFlight
			}
		}
	}
	return v
}

// counts are tickets by status, as the wire names statuses.
func counts(by map[admission.Status]int64) map[string]int64 {
	out := make(map[string]int64, len(by))
	for st, n := range by {
		out[string(st)] = n
	}
	return out
}
