// Package ingress is sluice's public HTTP API (Gin): clients create tickets, poll them
// and are redirected to their download; operators and release tooling use it too.
// It is stateless: tickets live in JetStream (durably) and in the admission ledger.
package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"

	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// Objects is the part of the object store the ingress uses.
type Objects interface {
	Stat(ctx context.Context, key string) (objstore.Info, error)
}

// Publisher stores accepted tickets durably.
type Publisher interface {
	Publish(ctx context.Context, t queue.Ticket) (uint64, error)
}

// Config wires the ingress to its dependencies.
type Config struct {
	Objects Objects
	// StatCache is how long the store's answer for an object's version is reused for
	// new tickets (statcache.go); zero: ask on every request.
	StatCache time.Duration
	Ledger    Ledger
	Publisher Publisher
	// Tickets reads accepted tickets from JetStream, for those the ledger lost.
	Tickets TicketRecords
	Keys    Keys
	Checks  []health.Check // what /readyz depends on
	// RequireClientKey refuses downloads without a client key (otherwise they run
	// under the tenant "public").
	RequireClientKey bool
	Logger           *slog.Logger
	Now              func() time.Time
	// IdempotencyTTL is how long an Idempotency-Key keeps answering with its ticket.
	IdempotencyTTL time.Duration
	// FilesWait is how long GET /api/v1/files/{key} waits for admission (files.go).
	FilesWait time.Duration
	// TicketRate bounds how fast one client takes new tickets (ratelimit.go); zero, or
	// a nil TicketLimiter: no bound.
	TicketRate    redis_rate.Limit
	TicketLimiter TicketLimiter
	// TrustedProxies are the addresses (IPs or CIDRs) whose X-Forwarded-For is believed
	// when telling clients apart; empty: the connection's own address.
	TrustedProxies []string
	// Releases wires the release API and the catalog check of downloads (releases.go).
	Releases ReleasesConfig
	// Uploads wires PUT /api/v1/uploads/{key} (upload.go).
	Uploads UploadsConfig
	// Ops wires metrics, tracing, the fleet registry and the dashboard (ops.go).
	Ops *Ops
	// Edges moves links whose edge is gone to a live one (relink.go); nil: never.
	Edges EdgeLinks
	// BodyTimeout and BodyMinRate bound how long a request body may take to arrive:
	// BodyTimeout plus a second per BodyMinRate bytes received (bounds.go). Zero: 10 s
	// and 32 KiB/s; a negative BodyTimeout: no bound.
	BodyTimeout time.Duration
	BodyMinRate int64
	// CORSOrigins are the origins (scheme://host[:port], or "*") browser code may call
	// the API from (cors.go); empty: no CORS.
	CORSOrigins []string
	// MaxLargeBodies is how many requests with a body over 64 KiB (release batches)
	// are read at once; zero: 4.
	MaxLargeBodies int
}

// Server is the ingress.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ready *health.Probe // /readyz: the Checks, and unready once drained
	// largeBodies holds one token per large request body being read (bounds.go).
	largeBodies chan struct{}
	// objects is Objects.Stat, remembered for StatCache (statcache.go).
	objects *statCache
}

// New returns an ingress server; Handler serves it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = defaultBodyTimeout
	}
	if cfg.BodyMinRate <= 0 {
		cfg.BodyMinRate = defaultBodyMinRate
	}
	if cfg.MaxLargeBodies <= 0 {
		cfg.MaxLargeBodies = defaultMaxLargeBodies
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "ingress"), ready: health.NewProbe(cfg.Logger, cfg.Checks...),
		largeBodies: make(chan struct{}, cfg.MaxLargeBodies), objects: &statCache{objects: cfg.Objects, ttl: cfg.StatCache, now: cfg.Now}}
}

// Drain makes readiness fail so load balancers stop sending requests before shutdown.
func (s *Server) Drain() { s.ready.Drain() }

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.cors(s.bodyDeadline(s.router())) }

// router is the API's routes; openapi.json documents every one (openapi_test.go).
func (s *Server) router() *gin.Engine {
	r := gin.New()
	r.ContextWithFallback = true
	if err := r.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		// Validated in cmd before the server is built.
		s.log.Error("trusted proxies ignored", "err", err)
		_ = r.SetTrustedProxies(nil)
	}
	r.Use(s.observe()...)
	r.Use(recovery(s.log), s.accessLog(), errorsToJSON(s.log),
		limitBody(smallBody, map[string]int64{"/api/v1/releases": maxReleaseBody, uploadRoute: s.maxUpload()}))
	r.GET("/healthz", gin.WrapF(health.Live))
	r.GET("/readyz", gin.WrapH(s.ready.Public()))

	api := r.Group("/api/v1")
	client := s.requireScope(apikeys.ScopeClient)
	api.POST("/downloads", client, s.createDownload)
	// Tickets are their owner's (owner.go): the key, if any, says who asks.
	api.GET("/tickets/:id", client, s.getTicket)
	api.GET("/tickets/:id/download", client, s.followTicket)
	api.POST("/tickets/:id/link", client, s.relinkTicket)
	api.DELETE("/tickets/:id", client, s.cancelTicket)
	api.GET("/files/*key", client, s.getFile)
	s.routeAdmin(api)
	s.routeReleases(api)
	s.routeUploads(api)
	s.routeOps(r)
	api.GET("/openapi.json", serveOpenAPI)

	r.NoRoute(func(c *gin.Context) {
		writeError(c, &apiError{Status: http.StatusNotFound, Code: "no_route", Message: "no such endpoint",
			Hint: "see the API in README.md; downloads start with POST /api/v1/downloads"})
	})
	return r
}

// limitBody bounds request bodies to n bytes, or to a route's own limit.
func limitBody(n int64, perRoute map[string]int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		limit := n
		if l, ok := perRoute[c.FullPath()]; ok {
			limit = l
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		c.Next()
	}
}

func (s *Server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		if c.Request.URL.Path == "/healthz" || c.Request.URL.Path == "/readyz" {
			return
		}
		s.log.Log(c.Request.Context(), telemetry.RequestLevel(c.Writer.Status()), "request", "method", c.Request.Method, "route", c.FullPath(),
			"status", c.Writer.Status(), "duration", time.Since(start).Round(time.Microsecond))
	}
}
