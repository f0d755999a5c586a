// Package health answers every role's probes: /healthz (the process runs) and /readyz
// (it can serve now: it is not draining and its dependencies answer). One shape for
// every role, so that load balancers, Kubernetes, `sluice health` and serve's ready
// line read them alike.
package health

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The states a readiness answer names.
const (
	StatusReady       = "ready"
	StatusUnavailable = "unavailable" // a dependency does not answer
	StatusDraining    = "draining"    // shutting down: load balancers should stop sending
)

// Answer is what /readyz answers (and /healthz, with Status "ok" only).
type Answer struct {
	Status string `json:"status"`
	// Checks maps each dependency to "ok" or why it failed.
	Checks map[string]string `json:"checks,omitempty"`
}

// Check is one dependency readiness depends on.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// checkTimeout bounds a readiness answer: a dependency that hangs is one that fails.
const checkTimeout = 2 * time.Second

// Probe answers readiness for one component.
type Probe struct {
	checks   []Check
	log      *slog.Logger
	draining atomic.Bool

	mu     sync.Mutex
	failed map[string]bool // the checks that failed at the last answer
}

// NewProbe returns a probe over checks, which it runs in parallel on every request. A
// check that starts or stops failing is logged to log (once, not at every probe).
func NewProbe(log *slog.Logger, checks ...Check) *Probe {
	return &Probe{checks: checks, log: log, failed: map[string]bool{}}
}

// Public answers as the probe does, but names a failing check "unavailable" instead of
// its error, which can hold internal addresses: for a port clients reach. The error is
// in the log, and on the operations port's /readyz where the role has one.
func (p *Probe) Public() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.answer(w, r, false) })
}

// Drain makes the probe answer 503 draining from now on, while the component still
// serves (see cmd/sluice/lifecycle.go).
func (p *Probe) Drain() { p.draining.Store(true) }

// ServeHTTP answers 200 when every check passes, else 503 with Retry-After and the
// failing checks' errors.
func (p *Probe) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.answer(w, r, true) }

func (p *Probe) answer(w http.ResponseWriter, r *http.Request, detail bool) {
	if p.draining.Load() {
		write(w, http.StatusServiceUnavailable, Answer{Status: StatusDraining})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(p.checks))
	for _, c := range p.checks {
		go func() { results <- result{c.Name, c.Ping(ctx)} }()
	}
	a := Answer{Status: StatusReady, Checks: make(map[string]string, len(p.checks))}
	for range p.checks {
		r := <-results
		p.note(r.name, r.err)
		switch {
		case r.err == nil:
			a.Checks[r.name] = "ok"
		case detail:
			a.Status, a.Checks[r.name] = StatusUnavailable, r.err.Error()
		default:
			a.Status, a.Checks[r.name] = StatusUnavailable, StatusUnavailable
		}
	}
	if a.Status != StatusReady {
		w.Header().Set("Retry-After", "5")
		write(w, http.StatusServiceUnavailable, a)
		return
	}
	write(w, http.StatusOK, a)
}

// note logs a check that starts or stops failing.
func (p *Probe) note(name string, err error) {
	p.mu.Lock()
	was := p.failed[name]
	p.failed[name] = err != nil
	p.mu.Unlock()
	switch {
	case err != nil && !was:
		p.log.Warn("readiness check failing: answering 503 on /readyz", "check", name, "err", err)
	case err == nil && was:
		p.log.Info("readiness check passing again", "check", name)
	}
}

// Live answers /healthz: 200 while the process can answer at all.
func Live(w http.ResponseWriter, _ *http.Request) { write(w, http.StatusOK, Answer{Status: "ok"}) }

func write(w http.ResponseWriter, status int, a Answer) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}

// Failing names the checks an answer says failed (none when it names none).
func (a Answer) Failing() []string {
	var names []string
	for name, state := range a.Checks {
		if state != "ok" {
			names = append(names, name)
		}
	}
	return names
}
