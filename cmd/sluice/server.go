package main

import (
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
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/connlimit"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

func newLogger(r role, c *serverConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: telemetry.ReplaceDurations}
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

// A component is one part of a server process, built whole by its constructor, which
// also opens its ports (so a port in use fails the build, before anything runs).
// Start runs it; its goroutines are its own, tracked, and joined by Shutdown, which
// stops it within ctx. Shutdown also releases a component that was built but never
// started. A component that fails while it runs says so on process.fatal.
type component interface {
	Start(ctx context.Context)
	Shutdown(ctx context.Context) error
}

// drainer is a component with a readiness probe: Drain makes it answer 503 while it
// still serves (lifecycle.go).
type drainer interface{ Drain() }

// newComponent builds one component from what the process shares.
type newComponent func(p *process) (component, error)

// roleComponents is what each command runs, in start order: a component is started
// after those it relies on and shut down before them. The catalog copy is followed
// before the edge cache and the API check against it; the edge serves the links the
// admission worker issues; the admission worker rebuilds a lost ledger before the API
// takes a ticket. serve is every part in one process (and at a terminal it says when
// it is ready: runServer adds a readyAnnouncer).
var roleComponents = map[role][]newComponent{
	roleServe:   {newCatalogComponent, newEdgeComponent, newAdmissionComponent, newReleasesComponent, newIngressComponent},
	roleIngress: {newCatalogComponent, newIngressComponent},
	roleWorker:  {newAdmissionComponent, newReleasesComponent},
	roleEdge:    {newEdgeComponent},
}

// runs reports whether the command r runs part's components: serve runs every part.
func (r role) runs(part role) bool { return r == part || r == roleServe }

// process is what the components of one process share, built once before any of
// them and closed after the last has stopped.
type process struct {
	role  role
	cfg   *serverConfig
	log   *slog.Logger
	deps  *deps     // connections and clients (deps.go)
	ops   *ops      // traces and the fleet registry (ops.go)
	rel   *releases // the release pipeline's streams and catalog; nil on the edge
	api   apiLimits // the ingress' parsed limits
	conns *connlimit.Limiter
	fatal chan error
}

// apiLimits are the ingress settings parsed before anything connects, so that a bad
// one fails at once.
type apiLimits struct {
	ticketRate     redis_rate.Limit
	publish        queue.PublishMode
	trustedProxies []string
	corsOrigins    []string
}

// runServer runs one role (or all of them) until ctx ends: it builds the dependencies
// once, then the role's components, starts them in order, waits for a signal or a
// fatal error, and shuts them down in reverse order (lifecycle.go).
func runServer(ctx context.Context, r role, c *serverConfig) error {
	p, err := newProcess(ctx, r, c)
	if err != nil {
		return err
	}
	defer p.close()
	comps, err := buildComponents(p, roleComponents[r])
	if err != nil {
		return err
	}
	if r == roleServe {
		comps = append(comps, newReadyAnnouncer(p, comps))
	}
	for _, comp := range comps {
		comp.Start(ctx)
	}
	select {
	case <-ctx.Done():
		p.log.Info("shutting down", "drain_delay", c.DrainDelay, "wait", c.ShutdownWait)
	case err = <-p.fatal:
		p.log.Error("stopping after a fatal error", "err", err)
	}
	stopping := time.Now()
	for _, comp := range comps {
		if d, ok := comp.(drainer); ok {
			d.Drain()
		}
	}
	if err == nil {
		err = drainPause(c.DrainDelay, p.log, p.fatal)
	}
	shutdown(comps, c.ShutdownWait, p.log)
	p.log.Info("stopped", "took", time.Since(stopping).Round(time.Millisecond))
	return err
}

// buildComponents builds each component in turn; when one fails, those built before
// it are shut down (closing the ports they opened) and its error returned.
func buildComponents(p *process, builders []newComponent) ([]component, error) {
	var comps []component
	for _, build := range builders {
		comp, err := build(p)
		if err != nil {
			shutdown(comps, time.Second, p.log)
			return nil, err
		}
		comps = append(comps, comp)
	}
	return comps, nil
}

// shutdown stops comps in reverse order, all within wait.
func shutdown(comps []component, wait time.Duration, log *slog.Logger) {
	deadline, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, comp := range slices.Backward(comps) {
		if err := comp.Shutdown(deadline); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}
}

// newProcess reads the settings that need no connection, then builds the
// dependencies, the operations and the release pipeline.
func newProcess(ctx context.Context, r role, c *serverConfig) (_ *process, err error) {
	log, err := newLogger(r, c)
	if err != nil {
		return nil, err
	}
	p := &process{role: r, cfg: c, log: log, fatal: make(chan error, 8)}
	if p.api.ticketRate, p.api.trustedProxies, err = c.ticketLimits(); err != nil {
		return nil, err
	}
	if err := c.boundsError(); err != nil {
		return nil, err
	}
	// serve without --nats-url embeds the server, which syncs every message (deps.go)
	if p.api.publish, err = c.publishMode(r == roleServe && c.NATSURL == ""); err != nil {
		return nil, err
	}
	if p.api.corsOrigins, err = ingress.ParseCORSOrigins(c.CORSOrigins); err != nil {
		return nil, fmt.Errorf("--cors-origins: %w", err)
	}
	logOpenFiles(log, c.MaxConnsPerIP)
	// One count per address for all of this process's listeners: the descriptors are
	// the process's.
	p.conns = connlimit.New(c.MaxConnsPerIP)
	metrics := telemetry.NewMetrics(r.String(), version, c.MetricsToken)
	if p.deps, err = buildDeps(ctx, r, c, log, metrics); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.ops, err = newOps(ctx, r, c, p.deps, log); err != nil {
		return nil, err
	}
	if p.rel, err = buildReleases(ctx, r, p.deps, c); err != nil { // releases.go
		return nil, err
	}
	if c.Demo && p.deps.local != nil {
		if err := seedDemo(ctx, p.deps.local, p.rel.queue, log); err != nil {
			log.Warn("could not store the demo objects", "err", err)
		}
	}
	return p, nil
}

// close flushes the traces and closes the dependencies, last.
func (p *process) close() {
	if p.ops != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.ops.shutdown(ctx)
		cancel()
	}
	p.deps.close()
}

// fail reports a component's failure at runtime: the process stops.
func (p *process) fail(err error) {
	select {
	case p.fatal <- err:
	default: // already stopping for an earlier one
	}
}

// listener is one HTTP server of a component, on its own port.
type listener struct {
	name string
	srv  *http.Server
	ln   net.Listener
	reqs *requestTracker
	// started is set by start, before Serve runs; done is closed when Serve has returned.
	started bool
	done    chan struct{}
}

// listen opens addr with its connections counted per client address by the process'
// cap (except those from exempt prefixes). It serves once started.
func (p *process) listen(name, addr string, h http.Handler, lc listenConfig) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	reqs := &requestTracker{}
	srv := httpServer(reqs.handler(h))
	srv.ConnContext, srv.ConnState = lc.connContext, lc.connState
	if lc.public {
		srv.ConnState = p.ops.countConns(name, lc.connState)
	}
	return &listener{name: name, srv: srv, ln: p.conns.Listen(ln, lc.exempt...),
		reqs: reqs, done: make(chan struct{})}, nil
}

// listenConfig is what a listener's server needs beyond its handler.
type listenConfig struct {
	// public: clients reach it (not an operations port); its open connections are
	// counted in sluice_http_open_connections.
	public bool
	// exempt are the addresses the per-address connection cap does not count
	// (the trusted proxies).
	exempt      []netip.Prefix
	connContext func(context.Context, net.Conn) context.Context
	connState   func(net.Conn, http.ConnState)
}

// start serves l in a goroutine that stop joins; a failure other than a shutdown is
// fatal to the process.
func (l *listener) start(p *process) {
	l.started = true
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
			p.fail(fmt.Errorf("%s: %w", l.name, err))
		}
	}()
	p.log.Info("listening", "server", l.name, "addr", l.ln.Addr().String())
}

// stop closes l's listener and lets running requests finish until deadline; then it
// cuts the rest and waits up to cutGrace for their handlers (lifecycle.go).
func (l *listener) stop(deadline context.Context, log *slog.Logger) {
	if l == nil {
		return
	}
	if !l.started { // built, never served: only the port to close
		_ = l.ln.Close()
		return
	}
	stopListener(deadline, l, log)
	<-l.done
}

func portOf(l *listener) string {
	if l == nil {
		return ""
	}
	_, port, _ := net.SplitHostPort(l.ln.Addr().String())
	return ":" + port
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
	var answer health.Answer
	_ = json.Unmarshal(body, &answer) // an answer of another shape names no check
	names := answer.Failing()
	slices.Sort(names)
	if len(names) == 0 {
		names = []string{resp.Status}
	}
	return l.name + ": " + strings.Join(names, ", "), strings.TrimSpace(string(body))
}
