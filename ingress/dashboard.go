package ingress

import (
	"embed"
	"net/http"

	"github.com/gin-gonic/gin"
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
