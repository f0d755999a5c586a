package ingress_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/client"
)

// While Redis is down, what needs the ledger answers 503 naming Redis with
// Retry-After, readiness fails, and a new ticket is still accepted: JetStream stores
// it. When Redis comes back empty, that ticket is restored from its message at its
// first poll, with its place in line.
func TestRedisOutage(t *testing.T) {
	a := newAPI(t)
	var before client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, &before)

	a.redis.Stop()
	for _, r := range []request{
		{method: http.MethodGet, path: "/api/v1/tickets/" + before.ID},
		{method: http.MethodGet, path: "/api/v1/tickets/" + before.ID + "/download"},
		{method: http.MethodDelete, path: "/api/v1/tickets/" + before.ID},
		{method: http.MethodGet, path: "/api/v1/admin/stats", key: a.operator},
	} {
		ans := a.do(t, r)
		ans.problem(t, http.StatusServiceUnavailable, "redis_unavailable")
		if ans.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", r.method, r.path)
		}
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	a.do(t, request{method: http.MethodGet, path: "/readyz"}).decode(t, http.StatusServiceUnavailable, &ready)
	if ready.Checks["redis"] == "ok" || ready.Checks["redis"] == "" {
		t.Errorf("readiness with Redis down: %+v", ready)
	}

	var during client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/other.txt")}).
		decode(t, http.StatusAccepted, &during)
	if during.Status != client.StatusQueued || during.ID == "" {
		t.Fatalf("ticket accepted during the outage: %+v", during)
	}
	if n := a.storedTickets(t); n != 2 {
		t.Fatalf("the ticket stream holds %d messages, want 2", n)
	}

	a.redis.Restart(t)
	// The client probes a server it failed to reach about once a second.
	deadline := time.Now().Add(15 * time.Second)
	for a.do(t, request{method: http.MethodGet, path: "/readyz"}).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("not ready 15 s after Redis came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var restored client.Ticket
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + during.ID}).decode(t, http.StatusOK, &restored)
	if restored.Status != client.StatusQueued || restored.Object != "demo/other.txt" {
		t.Errorf("ticket after Redis came back empty: %+v", restored)
	}
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + before.ID}).decode(t, http.StatusOK, &restored)
	if restored.Status != client.StatusQueued || restored.Position != 0 {
		t.Errorf("the older ticket after Redis came back empty: %+v, want first in line", restored)
	}
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + during.ID}).decode(t, http.StatusOK, &restored)
	if restored.Position != 1 {
		t.Errorf("the newer ticket is at position %d, want 1 (behind the older)", restored.Position)
	}
}
