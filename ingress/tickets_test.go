package ingress_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

func download(object string) map[string]string { return map[string]string{"object": object} }

// A ticket's life through the API: accepted (202, stored in JetStream), queued behind
// another with its position and Retry-After, followed to its link (303) once a worker
// admitted it, canceled (200, and 200 again), and gone for the follow (410).
func TestTicketLifecycle(t *testing.T) {
	a := newAPI(t)
	ctx := t.Context()

	var first, second client.Ticket
	ans := a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")})
	ans.decode(t, http.StatusAccepted, &first)
	if loc := ans.header.Get("Location"); loc != "/api/v1/tickets/"+first.ID {
		t.Errorf("Location %q", loc)
	}
	if first.Status != client.StatusQueued || first.Object != "demo/hello.txt" || first.Size != int64(len(objects["demo/hello.txt"])) {
		t.Fatalf("new ticket %+v", first)
	}
	// Accepted means stored: the ticket stream holds its message.
	if n := a.storedTickets(t); n != 1 {
		t.Fatalf("the ticket stream holds %d messages after one ticket", n)
	}
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/other.txt")}).
		decode(t, http.StatusAccepted, &second)

	var polled client.Ticket
	ans = a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + second.ID})
	ans.decode(t, http.StatusOK, &polled)
	if polled.Status != client.StatusQueued || polled.Position != 1 {
		t.Errorf("second ticket %+v, want queued with one ahead", polled)
	}
	if s, err := strconv.Atoi(ans.header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("a queued ticket's poll says when to poll again; Retry-After %q", ans.header.Get("Retry-After"))
	}

	// The limit is one: the first is admitted, the second waits.
	if got := a.grant(t, ctx); got != first.ID {
		t.Fatalf("admitted %s, want the older %s", got, first.ID)
	}
	// A queued ticket's download URL: an API client gets the ticket at once; a plain
	// client (curl -L, wget) is sent back to wait again, never given a body to save.
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + second.ID + "/download",
		header: map[string]string{"Accept": "application/json"}}).decode(t, http.StatusAccepted, nil)
	ans = a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + second.ID + "/download"})
	if want := "/api/v1/tickets/" + second.ID + "/download?wait=1"; ans.status != http.StatusSeeOther || ans.header.Get("Location") != want {
		t.Fatalf("a plain client on a queued ticket: %d Location %q, want 303 to %s", ans.status, ans.header.Get("Location"), want)
	}

	ans = a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + first.ID + "/download"})
	if ans.status != http.StatusSeeOther || ans.header.Get("Location") != "https://edge.test/d/token/"+first.ID {
		t.Fatalf("follow a ready ticket: %d Location %q", ans.status, ans.header.Get("Location"))
	}
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + first.ID}).decode(t, http.StatusOK, &polled)
	if polled.Status != client.StatusReady || polled.DownloadURL == "" || polled.ExpiresAt == nil {
		t.Errorf("ready ticket %+v", polled)
	}

	// Cancel frees the slot; canceling again is the same answer.
	for range 2 {
		var canceled client.Ticket
		a.do(t, request{method: http.MethodDelete, path: "/api/v1/tickets/" + first.ID}).decode(t, http.StatusOK, &canceled)
		if canceled.Status != client.StatusCanceled {
			t.Fatalf("canceled ticket %+v", canceled)
		}
	}
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + first.ID + "/download"}).
		problem(t, http.StatusGone, "ticket_canceled")
	if got := a.grant(t, ctx); got != second.ID {
		t.Fatalf("after the cancel admitted %s, want %s", got, second.ID)
	}
}

// The same Idempotency-Key and body answer with the same ticket, and store one
// message; the key reused for another object is refused (422) naming the first
// ticket, and nothing is stored.
func TestIdempotencyKeyReplayAndConflict(t *testing.T) {
	a := newAPI(t)
	key := a.key(t, apikeys.ScopeClient, "acme")
	post := func(object string) answer {
		return a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: key, body: download(object),
			header: map[string]string{"Idempotency-Key": "order-42"}})
	}
	var first, again client.Ticket
	post("demo/hello.txt").decode(t, http.StatusAccepted, &first)
	post("demo/hello.txt").decode(t, http.StatusAccepted, &again)
	if again.ID != first.ID {
		t.Fatalf("a retried request got ticket %s, the first %s", again.ID, first.ID)
	}
	var conflict struct {
		problem
		Ticket string `json:"ticket"`
	}
	post("demo/other.txt").decode(t, http.StatusUnprocessableEntity, &conflict)
	if conflict.Code != "idempotency_key_reused" || conflict.Ticket != first.ID {
		t.Errorf("reused key: %+v", conflict)
	}

	// The key is the caller's: another tenant's same key is another request.
	var other client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: a.key(t, apikeys.ScopeClient, "globex"),
		body: download("demo/other.txt"), header: map[string]string{"Idempotency-Key": "order-42"}}).
		decode(t, http.StatusAccepted, &other)
	if other.ID == first.ID {
		t.Error("two tenants' Idempotency-Keys collided")
	}
	if n := a.storedTickets(t); n != 2 {
		t.Errorf("the ticket stream holds %d messages, want 2 (one per distinct request)", n)
	}
}

// A ticket made with a key is its tenant's: another tenant and an anonymous caller are
// told there is no such ticket (404) for every verb; the same tenant's other key and
// an operator may use it.
func TestTicketsAreTheirOwners(t *testing.T) {
	a := newAPI(t)
	acme := a.key(t, apikeys.ScopeClient, "acme")
	var tk client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: acme, body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, &tk)

	path := "/api/v1/tickets/" + tk.ID
	for _, who := range []string{a.key(t, apikeys.ScopeClient, "globex"), ""} {
		for _, r := range []request{
			{method: http.MethodGet, path: path},
			{method: http.MethodGet, path: path + "/download"},
			{method: http.MethodDelete, path: path},
		} {
			r.key = who
			a.do(t, r).problem(t, http.StatusNotFound, "ticket_not_found")
		}
	}
	for _, who := range []string{a.key(t, apikeys.ScopeClient, "acme"), a.operator} {
		a.do(t, request{method: http.MethodGet, path: path, key: who}).decode(t, http.StatusOK, nil)
	}
	// The refused cancels changed nothing.
	var still client.Ticket
	a.do(t, request{method: http.MethodGet, path: path, key: acme}).decode(t, http.StatusOK, &still)
	if still.Status != client.StatusQueued {
		t.Errorf("after others' cancels the ticket is %s", still.Status)
	}
}

// Unknown and malformed ticket ids are the same 404.
func TestUnknownTickets(t *testing.T) {
	a := newAPI(t)
	for _, id := range []string{
		"t" + strings.Repeat("a", 26), // well-formed, never issued
		"T" + strings.Repeat("A", 26), // not the id alphabet
		"taaaa",                       // too short
		"t" + strings.Repeat("0", 26), // base32 has no 0 or 1
	} {
		a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + id}).problem(t, http.StatusNotFound, "ticket_not_found")
	}
}
