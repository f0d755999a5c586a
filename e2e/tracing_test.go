package e2e

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP/HTTP trace receiver: what every role exported, by role.
type collector struct {
	mu    sync.Mutex
	spans []exportedSpan
}

type exportedSpan struct {
	role, name      string
	traceID, spanID string
	parentID        string
}

func startCollector(t *testing.T) (*collector, string) {
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(raw, &req) != nil {
			http.Error(w, "want an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			role := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "sluice.role" {
					role = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					c.spans = append(c.spans, span(role, sp))
				}
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func span(role string, sp *tracepb.Span) exportedSpan {
	return exportedSpan{role: role, name: sp.Name, traceID: hex.EncodeToString(sp.TraceId),
		spanID: hex.EncodeToString(sp.SpanId), parentID: hex.EncodeToString(sp.ParentSpanId)}
}

func (c *collector) find(traceID, role, name string) (exportedSpan, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.spans {
		if s.traceID == traceID && s.role == role && (name == "" || s.name == name) {
			return s, true
		}
	}
	return exportedSpan{}, false
}

// TestTraceFollowsTicketAcrossRoles: a client's traceparent starts a trace that the
// ingress, the admitting worker (through the JetStream message and the ledger) and
// the edge's stream (through the token) all continue, and the log lines of the
// ticket carry its trace id.
func TestTraceFollowsTicketAcrossRoles(t *testing.T) {
	col, endpoint := startCollector(t)
	s := newStack(t, stackOptions{Env: []string{
		"SLUICE_OTLP_ENDPOINT=" + endpoint, "OTEL_BSP_SCHEDULE_DELAY=100", "SLUICE_LOG_LEVEL=debug"}})
	s.dumpLogsOnFailure()
	data := randomBytes(256<<10, 4)
	s.putObject("traced.bin", data)
	s.startAll(2)
	edgeLog, workerLogs := s.roles[0].Log, []string{s.roles[1].Log, s.roles[2].Log}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	id := s.request("traced.bin", "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01").ID
	link := s.follow(id, 20*time.Second)
	if _, n, resp := download(t, link); resp.StatusCode != http.StatusOK || n != int64(len(data)) {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
	}

	var ingress, admit, stream exportedSpan
	opsWait(t, 10*time.Second, "spans of the ingress, the worker and the edge in the client's trace", func() bool {
		var ok1, ok2, ok3 bool
		ingress, ok1 = col.find(traceID, "ingress", "")
		admit, ok2 = col.find(traceID, "worker", "admit")
		stream, ok3 = col.find(traceID, "edge", "stream")
		return ok1 && ok2 && ok3
	})
	if ingress.parentID != "00f067aa0ba902b7" {
		t.Errorf("the ingress span's parent is %s, want the client's span", ingress.parentID)
	}
	if stream.parentID != admit.spanID {
		t.Errorf("the stream's parent is %s, want the admit span %s", stream.parentID, admit.spanID)
	}

	var edgeTraced, workerTraced bool
	for _, l := range logLines(t, edgeLog) {
		edgeTraced = edgeTraced || l["msg"] == "request" && l["ticket"] == id && l["trace_id"] == traceID
	}
	for _, f := range workerLogs {
		for _, l := range logLines(t, f) {
			workerTraced = workerTraced || l["msg"] == "ticket ready" && l["ticket"] == id && l["trace_id"] == traceID
		}
	}
	if !edgeTraced || !workerTraced {
		t.Errorf("log lines with the trace id: edge request %v, worker ticket ready %v", edgeTraced, workerTraced)
	}
}
