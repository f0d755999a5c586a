package ingress_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// Without a trace exporter the ingress starts no spans, but a client's traceparent
// still travels with its ticket: the stored message carries the client's trace, which
// the worker and the edge continue.
func TestClientTraceParentReachesTheTicketWithoutAnExporter(t *testing.T) {
	tracing, err := telemetry.NewTracing(t.Context(), telemetry.TracingConfig{Role: "ingress"})
	if err != nil {
		t.Fatal(err)
	}
	if tracing.Exports() {
		t.Fatal("tracing without an endpoint exports")
	}
	a := newAPI(t, func(c *ingress.Config) { c.Ops = &ingress.Ops{Tracing: tracing} })
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tickets := queue.NewTickets(a.js)
	for _, tc := range []struct {
		name, traceparent, want string
	}{
		{"the client's", "00-" + traceID + "-00f067aa0ba902b7-01", traceID},
		{"none sent", "", ""},
		{"malformed", "00-not-a-trace", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ticket struct{ ID string }
			header := map[string]string{}
			if tc.traceparent != "" {
				header["traceparent"] = tc.traceparent
			}
			a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt"), header: header}).
				decode(t, http.StatusAccepted, &ticket)
			stored, err := tickets.Lookup(t.Context(), ticket.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && stored.TraceParent != "" || tc.want != "" && !strings.Contains(stored.TraceParent, "-"+tc.want+"-") {
				t.Fatalf("stored ticket's traceparent %q, want one of trace %q", stored.TraceParent, tc.want)
			}
		})
	}
}
