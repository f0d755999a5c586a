package ingress_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

// goneEdge is an edge registry in which the edge the test's links name has gone.
type goneEdge struct{}

func (goneEdge) Repoint(_ context.Context, link, _ string) (string, bool) {
	if rest, ok := strings.CutPrefix(link, "https://edge.test/"); ok {
		return "https://edge-b.test/" + rest, true
	}
	return link, false
}

// POST /api/v1/tickets/{id}/link gives a ready ticket's link on a live edge, with the
// same token and the ticket's place kept; the URLs for plain clients redirect to the
// moved link too. A queued ticket has no link to move (409), an ended one is gone
// (410), another tenant's is unknown (404).
func TestRelinkMovesALinkToALiveEdge(t *testing.T) {
	a := newAPI(t, func(c *ingress.Config) { c.Edges = goneEdge{} })
	acme := a.key(t, apikeys.ScopeClient, "acme")
	var first, second client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: acme, body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, &first)
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: acme, body: download("demo/other.txt")}).
		decode(t, http.StatusAccepted, &second)
	if got := a.grant(t, t.Context()); got != first.ID {
		t.Fatalf("admitted %s, want %s", got, first.ID)
	}

	link := "/api/v1/tickets/" + first.ID + "/link"
	var moved client.Ticket
	a.do(t, request{method: http.MethodPost, path: link, key: acme}).decode(t, http.StatusOK, &moved)
	if moved.Status != client.StatusReady || moved.DownloadURL != "https://edge-b.test/d/token/"+first.ID || moved.ExpiresAt == nil {
		t.Fatalf("relinked ticket %+v", moved)
	}
	ans := a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + first.ID + "/download", key: acme})
	if ans.status != http.StatusSeeOther || ans.header.Get("Location") != moved.DownloadURL {
		t.Fatalf("follow a ticket whose edge is gone: %d Location %q", ans.status, ans.header.Get("Location"))
	}

	a.do(t, request{method: http.MethodPost, path: "/api/v1/tickets/" + second.ID + "/link", key: acme}).
		problem(t, http.StatusConflict, "ticket_queued")
	a.do(t, request{method: http.MethodPost, path: link, key: a.key(t, apikeys.ScopeClient, "globex")}).
		problem(t, http.StatusNotFound, "ticket_not_found")
	a.do(t, request{method: http.MethodPost, path: link}).problem(t, http.StatusNotFound, "ticket_not_found")

	// Asking kept the ticket as it was: still ready, the other still queued behind it.
	var still client.Ticket
	a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/" + second.ID, key: acme}).decode(t, http.StatusOK, &still)
	if still.Status != client.StatusQueued {
		t.Fatalf("the queued ticket after relink requests: %+v", still)
	}
	a.do(t, request{method: http.MethodDelete, path: "/api/v1/tickets/" + first.ID, key: acme}).decode(t, http.StatusOK, nil)
	a.do(t, request{method: http.MethodPost, path: link, key: acme}).problem(t, http.StatusGone, "ticket_ended")
}
