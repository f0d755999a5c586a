package testenv

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// OTLPReceiver is an OTLP trace collector for one test, over OTLP/HTTP (protobuf at
// /v1/traces) or gRPC (the collector's TraceService): what arrived, with which
// headers.
type OTLPReceiver struct {
	// URL is the base URL exporters take, as OTEL_EXPORTER_OTLP_ENDPOINT
	// (http://127.0.0.1:port; for gRPC the scheme only says plain text).
	URL string

	mu      sync.Mutex
	spans   []ReceivedSpan
	headers []map[string]string
}

// ReceivedSpan is one exported span with its resource's string attributes.
type ReceivedSpan struct {
	Name     string
	Resource map[string]string
}

// StartOTLPReceiver starts a receiver for protocol "http/protobuf" or "grpc" on a
// random loopback port, stopped at cleanup.
func StartOTLPReceiver(tb testing.TB, protocol string) *OTLPReceiver {
	tb.Helper()
	rc := &OTLPReceiver{}
	switch protocol {
	case "http/protobuf":
		srv := httptest.NewServer(http.HandlerFunc(rc.serveHTTP))
		tb.Cleanup(srv.Close)
		rc.URL = srv.URL
	case "grpc":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		srv := grpc.NewServer()
		coltrace.RegisterTraceServiceServer(srv, &otlpTraceService{rc: rc})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
		tb.Cleanup(func() {
			srv.Stop()
			<-done
		})
		rc.URL = "http://" + ln.Addr().String()
	default:
		tb.Fatalf("OTLP protocol %q: want http/protobuf or grpc", protocol)
	}
	return rc
}

func (rc *OTLPReceiver) serveHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := &coltrace.ExportTraceServiceRequest{}
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(raw, req) != nil {
		http.Error(w, "want an OTLP/HTTP protobuf trace export at /v1/traces", http.StatusBadRequest)
		return
	}
	h := map[string]string{}
	for k, v := range r.Header {
		h[strings.ToLower(k)] = v[0]
	}
	rc.add(req, h)
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

type otlpTraceService struct {
	coltrace.UnimplementedTraceServiceServer
	rc *OTLPReceiver
}

func (s *otlpTraceService) Export(ctx context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	h := map[string]string{}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, v := range md {
		if len(v) > 0 {
			h[k] = v[0]
		}
	}
	s.rc.add(req, h)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func (rc *OTLPReceiver) add(req *coltrace.ExportTraceServiceRequest, headers map[string]string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.headers = append(rc.headers, headers)
	for _, rs := range req.ResourceSpans {
		attrs := map[string]string{}
		for _, a := range rs.GetResource().GetAttributes() {
			attrs[a.Key] = a.GetValue().GetStringValue()
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				rc.spans = append(rc.spans, ReceivedSpan{Name: sp.Name, Resource: attrs})
			}
		}
	}
}

// Spans is every span received so far.
func (rc *OTLPReceiver) Spans() []ReceivedSpan {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]ReceivedSpan(nil), rc.spans...)
}

// Header is the first value of a header (lower-case name) of any export received.
func (rc *OTLPReceiver) Header(name string) string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, h := range rc.headers {
		if v := h[name]; v != "" {
			return v
		}
	}
	return ""
}
