package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// names reports whether an error code names the dependency (the ticket queue is NATS).
func names(code, dependency string) bool {
	return strings.HasPrefix(code, dependency+"_") || dependency == "nats" && code == "queue_unavailable"
}

// answer is one request's outcome during an outage.
type answer struct {
	status int
	retry  string
	code   string
	took   time.Duration
}

func ask(t *testing.T, method, url, key string, body any) answer {
	t.Helper()
	start := time.Now()
	status, h, raw := call(t, method, url, key, body)
	var e struct{ Code string }
	_ = json.Unmarshal(raw, &e)
	return answer{status: status, retry: h.Get("Retry-After"), code: e.Code, took: time.Since(start)}
}

// Redis, then NATS, goes down under a running stack: every endpoint either does its
// job without it or answers 503 + Retry-After with a code naming it, never 500, and,
// once the breaker is open, at once (under 50 ms). A ticket accepted before the outage
// answers again by itself once Redis is back (restarted empty), at its place.
func TestDependencyOutagesAreAnswered(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.putObject("pkg.bin", randomBytes(64<<10, 3))
	s.startAll(1)
	_, clientKey := s.createKey("client", "acme")
	holder, _ := s.link("pkg.bin") // holds the only slot
	waiting := s.requestAs(clientKey, "pkg.bin")
	anonymous := s.request("pkg.bin")

	endpoints := []struct {
		method, path, key string
		body              any
	}{
		{http.MethodGet, "/api/v1/tickets/" + waiting.ID, clientKey, nil},
		{http.MethodGet, "/api/v1/tickets/" + waiting.ID + "/download", clientKey, nil},
		{http.MethodPost, "/api/v1/downloads", clientKey, map[string]string{"object": "pkg.bin"}},
		{http.MethodGet, "/api/v1/files/pkg.bin", "", nil},
		{http.MethodGet, "/api/v1/objects/pkg.bin", "", nil},
		{http.MethodGet, "/api/v1/admin/stats", admOperatorKey, nil},
		{http.MethodGet, "/api/v1/admin/limits", admOperatorKey, nil},
		{http.MethodGet, "/api/v1/admin/keys", admOperatorKey, nil},
		{http.MethodGet, "/api/v1/admin/workers", admOperatorKey, nil},
	}
	// check asks every endpoint: each works or names the dependency that is down.
	check := func(dependency string, fast bool) {
		t.Helper()
		for _, e := range endpoints {
			a := ask(t, e.method, s.ingressURL+e.path, e.key, e.body)
			switch {
			case a.status < 400 || a.status == http.StatusNotFound && strings.HasPrefix(e.path, "/api/v1/objects/"):
				// done without the dependency (or the honest answer: never published)
			case a.status != http.StatusServiceUnavailable || a.retry == "" || !names(a.code, dependency):
				t.Errorf("%s down: %s %s answered %d %q Retry-After=%q, want 503 naming %s", dependency, e.method, e.path, a.status, a.code, a.retry, dependency)
			case fast && a.took >= 50*time.Millisecond:
				t.Errorf("%s down, breaker open: %s %s took %s, want under 50ms", dependency, e.method, e.path, a.took)
			}
		}
	}

	s.redis.Stop()
	eventually(t, 30*time.Second, "the ingress's redis breaker to open", func() bool {
		ask(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+waiting.ID, clientKey, nil)
		m, _ := scrape(t, s.ingressURL+"/metrics")
		return m[`sluice_breaker_state{breaker="redis",state="open"}`] == 1
	})
	check("redis", true)
	a := ask(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+waiting.ID, clientKey, nil)
	if a.code != "redis_unavailable" {
		t.Errorf("a ticket read with Redis down: %d %q, want 503 redis_unavailable", a.status, a.code)
	}

	s.redis.Restart(t) // empty: no persistence
	eventually(t, 30*time.Second, "the waiting ticket to answer again after Redis came back empty", func() bool {
		st, _, raw := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+waiting.ID, clientKey, nil)
		var tk api.Ticket
		_ = json.Unmarshal(raw, &tk)
		return st == http.StatusOK && tk.ID == waiting.ID && tk.Status != ""
	})
	for _, id := range []string{holder, anonymous.ID} {
		if st, _, raw := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+id, "", nil); st != http.StatusOK {
			t.Errorf("ticket %s answers %d %s after Redis came back", id, st, raw)
		}
	}

	s.nats.Stop()
	check("nats", false)
	// What needs only Redis still works: an anonymous ticket reads, with its place (a
	// keyed one needs its key checked, and keys are records in NATS).
	if st, _, raw := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+anonymous.ID, "", nil); st != http.StatusOK {
		t.Errorf("with NATS down the anonymous ticket answers %d %s, want 200 from the ledger", st, raw)
	}
	if a := ask(t, http.MethodPost, s.ingressURL+"/api/v1/downloads", "", map[string]string{"object": "pkg.bin"}); !names(a.code, "nats") || a.took >= 50*time.Millisecond {
		t.Errorf("POST with NATS down: %d %q in %s, want 503 naming nats at once", a.status, a.code, a.took)
	}
}
