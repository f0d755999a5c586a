package ingress

import (
	"context"
	"embed"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/fleet"
)

// The dashboard is plain HTML, CSS and JavaScript with hand-written SVG charts,
// embedded in the binary: nothing to build, nothing fetched from elsewhere. The page
// asks for an operator key, keeps it in the tab's sessionStorage and calls the admin
// API with it, so it needs no server-side session of its own.
//
//go:embed dashboard/index.html dashboard/app.js dashboard/style.css
var dashboardFiles embed.FS

func (s *Server) routeDashboard(r *gin.Engine) {
	serve := func(name, contentType string) gin.HandlerFunc {
		b, err := dashboardFiles.ReadFile("dashboard/" + name)
		if err != nil {
			panic("ingress: dashboard asset missing: " + name) // a build mistake, caught by any test
		}
		return func(c *gin.Context) {
			h := c.Writer.Header()
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Content-Type-Options", "nosniff")
			// Only our own files, and the admin API on the same origin.
			h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
			h.Set("Referrer-Policy", "no-referrer")
			c.Data(http.StatusOK, contentType, b)
		}
	}
	r.GET("/dashboard", serve("index.html", "text/html; charset=utf-8"))
	r.GET("/dashboard/app.js", serve("app.js", "text/javascript; charset=utf-8"))
	r.GET("/dashboard/style.css", serve("style.css", "text/css; charset=utf-8"))
}

// historySeconds is how far back GET /api/v1/admin/history goes: the dashboard draws
// it on every visit, so its charts never start empty.
const historySeconds = 15 * 60

// history answers GET /api/v1/admin/history: the fleet's activity (admissions/s,
// bytes/s, wait percentiles) for every second of the last 15 minutes, each point
// summarized as the admin stats were at that second. It is read from the fleet's
// per-second window in Redis, derived state like the stats themselves.
func (s *Server) history(c *gin.Context) {
	f := s.fleet()
	if f == nil {
		c.JSON(http.StatusOK, gin.H{"seconds": historySeconds, "points": []fleet.Point{}})
		return
	}
	secs, err := f.Window(c.Request.Context(), historySeconds+statsWindow-1)
	if err != nil {
		c.Error(redisUnavailable("the fleet's activity window", err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"seconds": historySeconds, "points": fleet.History(secs, statsWindow, statsRateSeconds)})
}

// idleTenants adds to the stats' tenants (those with tickets queued or slots held)
// the ones with nothing going on that operators still want to see: every tenant with
// limits of its own, and public, the tenant of anonymous downloads, when they are
// allowed. Best effort: without the limits the stats are still right.
func (s *Server) idleTenants(ctx context.Context, tenants map[string]admission.TenantStats) {
	if tenants == nil {
		return
	}
	l, err := s.cfg.Ledger.Limits(ctx)
	if err != nil {
		return
	}
	idle := func(name string, own admission.TenantLimits) {
		if _, ok := tenants[name]; ok {
			return
		}
		t := admission.TenantStats{Limit: int64(l.TenantDefault), Weight: 1}
		if own.Limit != nil {
			t.Limit = int64(*own.Limit)
		}
		if own.Weight != nil {
			t.Weight = *own.Weight
		}
		tenants[name] = t
	}
	for name, own := range l.Tenants {
		idle(name, own)
	}
	if !s.cfg.RequireClientKey {
		idle(publicTenant, l.Tenants[publicTenant])
	}
}
