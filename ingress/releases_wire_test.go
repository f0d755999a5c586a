package ingress_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	wire "github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// Release events written as wire.ReleaseEvent (as sluice publish and the client write
// them) are read back whole by the ingress, with the identity that makes a resent
// event a duplicate; a line without a required member is refused naming it.
func TestReleaseEventsAsTheClientWritesThem(t *testing.T) {
	s := newBadInputServer(t)
	sum := strings.Repeat("ab", 32)
	sent := []wire.ReleaseEvent{
		{Object: "rel/app-1.0.tar.gz", SHA256: sum, Size: 10},
		{EventID: "build-42", Object: "rel/app-1.1.tar.gz", SHA256: sum, Size: 0, Channel: "stable"},
	}
	var lines []string
	for _, ev := range sent {
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(raw))
	}
	lines = append(lines, `{"object":"rel/no-size","sha256":"`+sum+`"}`)
	a := s.do(t, http.MethodPost, "/api/v1/releases", "application/x-ndjson", strings.Join(lines, "\n"))
	if a.status != http.StatusAccepted || len(a.Lines) != 1 || a.Lines[0].Line != 3 || !strings.Contains(a.Lines[0].Error, `"size" is required`) {
		t.Fatalf("batch: %d %+v, want 202 with line 3 refused for its missing size", a.status, a.Lines)
	}
	got := s.queue.all()
	if len(got) != len(sent) {
		t.Fatalf("%d events stored, want %d", len(got), len(sent))
	}
	identities := []string{"obj:rel/app-1.0.tar.gz@" + sum, "id:build-42"}
	for i, ev := range got {
		if ev.ReleaseEvent != sent[i] || ev.Identity != identities[i] || ev.AcceptedAt.IsZero() {
			t.Errorf("event %d stored as %+v, sent %+v, want identity %s", i, ev, sent[i], identities[i])
		}
	}
}

// The catalog's states are the ones the API documents: the ingress passes them on as
// they are.
func TestCatalogStatesAreTheAPIs(t *testing.T) {
	for ours, wire := range map[string]string{catalog.StatePending: wire.StatePending,
		catalog.StateVerified: wire.StateVerified, catalog.StateRejected: wire.StateRejected} {
		if ours != wire {
			t.Errorf("catalog state %q is %q on the wire", ours, wire)
		}
	}
}
