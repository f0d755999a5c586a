package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/connlimit"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/signer"
	"github.com/sluice-dl/sluice/workers"
)

func newLogger(r role, c *serverConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := c.LogFormat
	if format == "auto" {
		format = "json"
		if r == roleServe {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(os.Stderr, opts))).With("role", r.String()), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(os.Stderr, opts))).With("role", r.String()), nil
	}
	return nil, fmt.Errorf("--log-format must be text, json or auto, not %q", c.LogFormat)
}

// httpServer is bounded: slow headers, idle connections and huge headers cannot hold it.
// No write timeout: downloads are long; the edge watches each write itself.
func httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

type listener struct {
	name string
	srv  *http.Server
	ln   net.Listener
	reqs *requestTracker
}

// listen opens addr with its connections counted per client address by conns
// (except those from exempt prefixes).
func listen(name, addr string, h http.Handler, conns *connlimit.Limiter, exempt ...netip.Prefix) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	reqs := &requestTracker{}
	return &listener{name: name, srv: httpServer(reqs.handler(h)), ln: conns.Listen(ln, exempt...), reqs: reqs}, nil
}

// runServer runs one role (or all of them) until ctx ends, then shuts down in reverse
// dependency order: readiness goes false, the API stops, workers hand back their
// tickets, the edge lets running streams finish within the shutdown wait.
func runServer(ctx context.Context, r role, c *serverConfig) error {
	log, err := newLogger(r, c)
	if err != nil {
		return err
	}
	ticketRate, trustedProxies, err := c.ticketLimits()
	if err != nil {
		return err
	}
	if err := c.boundsError(); err != nil {
		return err
	}
	corsOrigins, err := ingress.ParseCORSOrigins(c.CORSOrigins)
	if err != nil {
		return fmt.Errorf("--cors-origins: %w", err)
	}
	logOpenFiles(log, c.MaxConnsPerIP)
	// One count per address for all of this process's listeners: the descriptors are
	// the process's.
	conns := connlimit.New(c.MaxConnsPerIP)
	d, err := buildDeps(ctx, r, c, log)
	if err != nil {
		return err
	}
	defer d.close()
	o, err := startOps(ctx, r, c, d, log) // metrics, traces, fleet registry (ops.go)
	if err != nil {
		return err
	}
	defer o.close()
	o.conns = conns
	rel, err := buildReleases(ctx, r, d, c) // the release pipeline (releases.go)
	if err != nil {
		return err
	}

	var (
		api, edge         *listener
		ingressSrv        *ingress.Server
		workerWG          sync.WaitGroup
		serveErrs         = make(chan error, 2)
		workCtx, stopWork = context.WithCancel(context.WithoutCancel(ctx))
		draining          atomic.Bool // the edge's readiness; the ingress keeps its own
	)
	defer stopWork()

	if r == roleServe || r == roleIngress {
		adminKey := c.AdminKey
		if adminKey == "" && r == roleServe {
			adminKey = apikeys.Generate()
			// Printed once for the person at the terminal, never into the log stream.
			fmt.Fprintf(os.Stdout, "\n  operator API key for this run: %s\n  (set SLUICE_ADMIN_KEY to choose your own)\n\n", adminKey)
		} else if adminKey == "" {
			log.Warn("no SLUICE_ADMIN_KEY: only keys already stored in JetStream can use the admin API")
		}
		keys := apikeys.New(d.records.keys, adminKey)
		importCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if n, err := keys.ImportRedis(importCtx, d.rdb, ""); err != nil {
			log.Warn("could not import the API keys an earlier version kept in Redis; they answer 401 until a start imports them", "err", err)
		} else if n > 0 {
			log.Info("imported API keys from Redis into JetStream (kept there by an earlier version)", "keys", n)
		}
		cancel()
		ingressSrv = ingress.New(ingress.Config{
			Keys:             keys,
			Tickets:          queue.NewTickets(d.js),
			RequireClientKey: c.RequireClientKey,
			FilesWait:        c.FilesWait,
			TicketRate:       ticketRate,
			TicketLimiter:    redis_rate.NewLimiter(d.rdb),
			TrustedProxies:   trustedProxies,
			CORSOrigins:      corsOrigins,
			Objects:          d.store,
			Ledger:           d.ledger,
			Publisher:        o.publisher(queue.NewPublisher(d.nc, d.js, 5*time.Second)),
			Checks: []ingress.Check{
				{Name: "nats", Ping: func(ctx context.Context) error { return queue.Ping(ctx, d.js) }},
				{Name: "redis", Ping: d.ledger.Ping},
				{Name: "storage", Ping: d.store.Ping},
			},
			Logger: log,
			Ops:    o.ingress(),
			// The publish API, the catalog and the catalog check of downloads.
			Releases: rel.ingressConfig(),
			// Slow and large bodies (ingress/bounds.go).
			BodyTimeout:    cmp.Or(c.BodyTimeout, -1), // the flag's 0 is "no bound", Config's the default
			BodyMinRate:    c.BodyMinRate,
			MaxLargeBodies: c.MaxLargeBodies,
		})
		if api, err = listen("ingress", c.IngressAddr, ingressSrv.Handler(), conns, prefixes(trustedProxies)...); err != nil {
			return err
		}
		o.joinIngress(api)
	}
	if r == roleServe || r == roleEdge {
		e := signer.NewEdge(signer.EdgeConfig{
			Keyring: d.keyring,
			Store:   d.store,
			Slots:   d.ledger,
			Logger:  log,
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
		})
		mux := http.NewServeMux()
		mux.Handle("/", e.Handler())
		mux.Handle("GET /metrics", o.metrics.Handler())
		mux.HandleFunc("GET /readyz", readiness(&draining, map[string]func(context.Context) error{
			"redis": d.ledger.Ping, "storage": d.store.Ping,
		}))
		if edge, err = listen("edge", c.EdgeAddr, o.edgeHTTP(mux), conns); err != nil {
			return err
		}
		o.joinEdge(e, edge)
		edge.srv.ConnContext = e.ConnContext
	}
	if r == roleServe || r == roleWorker {
		var direct workers.Presigner
		if c.DirectDownloads {
			if d.s3 == nil {
				return errors.New("--direct-downloads needs objects in S3/MinIO: set --s3-endpoint and its credentials")
			}
			direct = d.s3
			log.Info("direct mode: links are presigned storage URLs; no throttling, slots lapse at the link's expiry")
		}
		adm := workers.NewAdmission(workers.AdmissionConfig{
			Direct:        direct,
			Consumer:      d.tickets,
			Backlog:       queue.NewTickets(d.js),
			Ledger:        d.ledger,
			Tokens:        d.keyring,
			PublicEdgeURL: strings.TrimRight(c.PublicEdgeURL, "/"),
			TokenTTL:      c.TokenTTL,
			AckWait:       c.AckWait,
			Logger:        log,
			Tracer:        o.tracer("workers"),
			OnAdmitted:    o.admitted,
		})
		workerReady := readiness(&draining, map[string]func(context.Context) error{
			"nats": func(ctx context.Context) error { return queue.Ping(ctx, d.js) }, "redis": d.ledger.Ping,
		})
		adm.Prepare(ctx)
		if err := o.joinWorker(adm, api, workerReady); err != nil {
			return err
		}
		workerWG.Go(func() {
			if err := adm.Run(workCtx); err != nil {
				serveErrs <- fmt.Errorf("admission worker: %w", err)
			}
		})
		rel.onOutcome = o.releaseOutcome
		rel.startWorker(workCtx, &workerWG, d, c, serveErrs, log) // verifies release events
	}
	if r == roleServe && c.Demo && d.local != nil {
		if err := seedDemo(ctx, d.local, rel.queue, log); err != nil {
			log.Warn("could not store the demo objects", "err", err)
		}
	}
	for _, l := range []*listener{api, edge} {
		if l == nil {
			continue
		}
		go func() {
			if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				serveErrs <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
		log.Info("listening", "server", l.name, "addr", l.ln.Addr().String())
	}
	if r == roleServe {
		if loopbackOnly(api) || loopbackOnly(edge) {
			log.Info("listening on this machine only; to listen on every interface set SLUICE_INGRESS_ADDR=:8080 and SLUICE_EDGE_ADDR=:8081 (or --ingress-addr, --edge-addr), and SLUICE_PUBLIC_EDGE_URL to the edge's address as clients reach it")
		}
		// Stopped by stopWork, waited for with the workers.
		workerWG.Go(func() {
			announceReady(workCtx, log, []*listener{api, edge},
				"sluice is ready; try: curl -si -X POST localhost"+portOf(api)+"/api/v1/downloads -d '{\"object\":\"demo/hello.txt\"}'")
		})
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_delay", c.DrainDelay, "wait", c.ShutdownWait)
	case err = <-serveErrs:
		log.Error("stopping after a fatal error", "err", err)
	}
	// The sequence is described in lifecycle.go.
	stopping := time.Now()
	draining.Store(true)
	if ingressSrv != nil {
		ingressSrv.Drain()
	}
	if err == nil {
		err = drainPause(c.DrainDelay, log, serveErrs)
	}
	deadline, cancel := context.WithTimeout(context.Background(), c.ShutdownWait)
	defer cancel()
	var servers sync.WaitGroup
	for _, l := range []*listener{api, edge} {
		if l != nil {
			servers.Go(func() { stopListener(deadline, l, log) })
		}
	}
	stopWork()
	workerWG.Wait()
	servers.Wait()
	log.Info("stopped", "took", time.Since(stopping).Round(time.Millisecond))
	return err
}

func portOf(l *listener) string {
	if l == nil {
		return ""
	}
	_, port, _ := net.SplitHostPort(l.ln.Addr().String())
	return ":" + port
}

func readiness(draining *atomic.Bool, checks map[string]func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"draining"}`)
			return
		}
		for name, check := range checks {
			if err := check(ctx); err != nil {
				w.Header().Set("Retry-After", "5")
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "{\"status\":\"unavailable\",\"failed\":%q}\n", name)
				return
			}
		}
		fmt.Fprintln(w, `{"status":"ready"}`)
	}
}

// loopbackOnly reports whether l accepts connections from this machine only.
func loopbackOnly(l *listener) bool {
	if l == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(l.ln.Addr().String())
	return err == nil && ap.Addr().IsLoopback()
}

// announceReady logs msg once every listener's /readyz answers 200, and until then,
// each time the failing checks change, which they are: a person at the terminal is
// not told "ready" while a dependency is down.
func announceReady(ctx context.Context, log *slog.Logger, listeners []*listener, msg string) {
	client := &http.Client{Timeout: 3 * time.Second}
	last := ""
	for {
		failing, detail := "", ""
		for _, l := range listeners {
			if l == nil {
				continue
			}
			if failing, detail = readyProblem(ctx, client, l); failing != "" {
				break
			}
		}
		if failing == "" {
			log.Info(msg)
			return
		}
		if failing != last && ctx.Err() == nil {
			log.Warn("not ready yet: /readyz answers 503; sluice says it is ready once it answers 200", "failing", failing, "detail", detail)
			last = failing
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// readyProblem asks l's /readyz over loopback. It returns "" when the answer is 200,
// else what fails ("ingress: redis") and the answer's details.
func readyProblem(ctx context.Context, client *http.Client, l *listener) (failing, detail string) {
	ap, err := netip.ParseAddrPort(l.ln.Addr().String())
	if err != nil {
		return l.name, err.Error()
	}
	host := ap.Addr()
	if host.IsUnspecified() {
		host = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	url := "http://" + netip.AddrPortFrom(host.Unmap(), ap.Port()).String() + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return l.name, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return l.name, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return "", ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	// The ingress lists its checks; the edge names the one that failed.
	var answer struct {
		Failed string            `json:"failed"`
		Checks map[string]string `json:"checks"`
	}
	_ = json.Unmarshal(body, &answer)
	var names []string
	if answer.Failed != "" {
		names = append(names, answer.Failed)
	}
	for name, state := range answer.Checks {
		if state != "ok" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		names = []string{resp.Status}
	}
	return l.name + ": " + strings.Join(names, ", "), strings.TrimSpace(string(body))
}
