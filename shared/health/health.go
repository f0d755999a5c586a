// Package health answers every role's probes: /healthz (the process runs) and /readyz
// (it can serve now: it is not draining and its dependencies answer). One shape for
// every role, so that load balancers, Kubernetes, `sluice health` and serve's ready
// line read them alike.
package health

import (
	"context"
	"encoding/json"
	"net/http"
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

// Probe answers readiness for one component. Its zero value has no checks and is ready.
type Probe struct {
	checks   []Check
	draining atomic.Bool
}

// NewProbe returns a probe over checks, which it runs in parallel on every request.
func NewProbe(checks ...Check) *Probe { return &Probe{checks: checks} }

// Drain makes the probe answer 503 draining from now on, while the component still
// serves (see cmd/sluice/lifecycle.go).
func (p *Probe) Drain() { p.draining.Store(true) }

// ServeHTTP answers 200 when every check passes, else 503 with Retry-After and the
// failing checks' errors.
func (p *Probe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
		if r.err != nil {
			a.Status, a.Checks[r.name] = StatusUnavailable, r.err.Error()
		} else {
			a.Checks[r.name] = "ok"
		}
	}
	if a.Status != StatusReady {
		w.Header().Set("Retry-After", "5")
		write(w, http.StatusServiceUnavailable, a)
		return
	}
	write(w, http.StatusOK, a)
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
