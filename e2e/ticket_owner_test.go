package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A ticket is its owner's: one made with a key answers only that tenant's
// keys and operators; everyone else gets 404, as if it did not exist, on every ticket
// endpoint, and cannot take it over through /files?ticket=. An anonymous ticket's id is
// its capability: its holder may use it, and nothing a third party sees reveals it —
// not the link, not /metrics, not the edge's debug page. Idempotency-Keys are each
// key's own, and one reused for another object is refused with 422.
func TestTicketsBelongToTheirOwner(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.putObject("own.bin", randomBytes(32<<10, 5))
	s.putObject("other.bin", randomBytes(32<<10, 6))
	s.startAll(1)
	_, acme := s.createKey("client", "acme")
	_, acme2 := s.createKey("client", "acme") // same tenant, another key
	_, rival := s.createKey("client", "rival")

	ready := s.requestAs(acme, "own.bin") // takes the one slot
	link := s.follow(ready.ID, 10*time.Second)
	queued := s.requestAs(acme, "own.bin")
	anon := s.request("own.bin")

	status := func(method, path, key string) int {
		t.Helper()
		code, _, _ := call(t, method, s.ingressURL+path, key, nil)
		return code
	}
	for _, id := range []string{ready.ID, queued.ID} {
		for _, path := range []string{"/api/v1/tickets/" + id, "/api/v1/tickets/" + id + "/download"} {
			for who, key := range map[string]string{"another tenant": rival, "an anonymous caller": ""} {
				if code := status(http.MethodGet, path, key); code != http.StatusNotFound {
					t.Errorf("%s: GET %s answered %d, want 404", who, path, code)
				}
			}
			for who, key := range map[string]string{"the owner": acme, "the owner's other key": acme2, "an operator": admOperatorKey} {
				if code := status(http.MethodGet, path, key); code != http.StatusOK && code != http.StatusSeeOther && code != http.StatusAccepted {
					t.Errorf("%s: GET %s answered %d", who, path, code)
				}
			}
		}
		for who, key := range map[string]string{"another tenant": rival, "an anonymous caller": ""} {
			if code := status(http.MethodDelete, "/api/v1/tickets/"+id, key); code != http.StatusNotFound {
				t.Errorf("%s: DELETE ticket answered %d, want 404", who, code)
			}
		}
	}
	if tk := s.ticket(queued.ID); tk.Status != "queued" {
		t.Fatalf("a stranger's DELETE changed the ticket: %s", tk.Status)
	}
	// /files?ticket= with someone else's ticket starts the caller's own, never theirs.
	req, _ := http.NewRequest(http.MethodGet, s.ingressURL+"/api/v1/files/own.bin?ticket="+queued.ID+"&wait=1", nil)
	req.Header.Set("Authorization", "Bearer "+rival)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); strings.Contains(loc, queued.ID) {
		t.Errorf("/files followed another tenant's ticket: %d Location %s", resp.StatusCode, loc)
	}

	// An anonymous ticket: its id is the capability.
	if code := status(http.MethodGet, "/api/v1/tickets/"+anon.ID, ""); code != http.StatusOK {
		t.Errorf("the anonymous ticket's holder got %d", code)
	}
	// Nothing others see names a ticket.
	u, _ := url.Parse(link)
	for _, id := range []string{ready.ID, queued.ID, anon.ID} {
		if strings.Contains(link, id) {
			t.Errorf("the link %s names ticket %s", u.Path, id)
		}
		for _, page := range []string{s.ingressURL + "/metrics", s.edgeMetricsURL + "/metrics", s.edgeMetricsURL + "/debug/edge"} {
			r, err := http.Get(page)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if strings.Contains(string(b), id) {
				t.Errorf("%s names ticket %s", page, id)
			}
		}
	}
	if sum, _, _ := download(t, link); sum != sha(randomBytes(32<<10, 5)) {
		t.Error("the owner's link served wrong bytes")
	}

	// Idempotency-Keys: each key's own; reused for another object, 422 naming the first.
	post := func(key, idem, object string) (int, map[string]any) {
		t.Helper()
		r, _ := http.NewRequest(http.MethodPost, s.ingressURL+"/api/v1/downloads", strings.NewReader(`{"object":"`+object+`"}`))
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Idempotency-Key", idem)
		resp, err := noRedirect.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	_, first := post(acme, "order-1", "own.bin")
	if code, again := post(acme, "order-1", "own.bin"); code != http.StatusAccepted || again["id"] != first["id"] {
		t.Errorf("a retry with the same key and body: %d %v, want 202 with ticket %v", code, again["id"], first["id"])
	}
	if code, other := post(acme2, "order-1", "own.bin"); code != http.StatusAccepted || other["id"] == first["id"] {
		t.Errorf("another key's request with the same Idempotency-Key: %d %v, want its own new ticket", code, other["id"])
	}
	if code, body := post(acme, "order-1", "other.bin"); code != http.StatusUnprocessableEntity || body["object"] != "own.bin" {
		t.Errorf("the same key for another object: %d %v, want 422 naming own.bin", code, body)
	}
}
