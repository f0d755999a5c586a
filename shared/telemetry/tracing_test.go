package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// receiver is an in-test OTLP trace collector: what arrived, and with which headers.
type receiver struct {
	mu       sync.Mutex
	requests []*coltrace.ExportTraceServiceRequest
	headers  []map[string]string // lower-case names, first value
}

func (rc *receiver) add(req *coltrace.ExportTraceServiceRequest, headers map[string]string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests = append(rc.requests, req)
	rc.headers = append(rc.headers, headers)
}

// spans is the name of every span received, with its resource's attributes.
func (rc *receiver) spans() (names []string, resources []map[string]string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, req := range rc.requests {
		for _, rs := range req.ResourceSpans {
			attrs := map[string]string{}
			for _, a := range rs.GetResource().GetAttributes() {
				attrs[a.Key] = a.GetValue().GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					names = append(names, sp.Name)
					resources = append(resources, attrs)
				}
			}
		}
	}
	return names, resources
}

func (rc *receiver) header(name string) string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, h := range rc.headers {
		if v := h[name]; v != "" {
			return v
		}
	}
	return ""
}

// startHTTPReceiver serves OTLP/HTTP protobuf at /v1/traces and returns its base URL.
func startHTTPReceiver(t *testing.T) (*receiver, string) {
	rc := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	t.Cleanup(srv.Close)
	return rc, srv.URL
}

// grpcTraceService is the collector's TraceService over gRPC.
type grpcTraceService struct {
	coltrace.UnimplementedTraceServiceServer
	rc *receiver
}

func (s *grpcTraceService) Export(ctx context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
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

// startGRPCReceiver serves OTLP/gRPC on a loopback port and returns host:port.
func startGRPCReceiver(t *testing.T) (*receiver, string) {
	rc := &receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, &grpcTraceService{rc: rc})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return rc, ln.Addr().String()
}

// clearOTELEnv unsets, for the test, the variables the SDK would read from the machine.
func clearOTELEnv(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE",
		"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"} {
		t.Setenv(k, "")
	}
}

// exportOne builds the tracing of cfg, records one root span named name, and flushes.
func exportOne(t *testing.T, cfg TracingConfig, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tr, err := NewTracing(ctx, cfg)
	if err != nil {
		t.Fatalf("NewTracing(%+v): %v", cfg, err)
	}
	_, span := tr.Tracer("test").Start(ctx, name)
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestTracingOverBothProtocolsFollowsOTELVariables(t *testing.T) {
	for _, proto := range []string{ProtocolHTTP, ProtocolGRPC} {
		t.Run(proto, func(t *testing.T) {
			start := func(t *testing.T) (*receiver, string) {
				if proto == ProtocolGRPC {
					rc, addr := startGRPCReceiver(t)
					return rc, "http://" + addr
				}
				return startHTTPReceiver(t)
			}

			t.Run("endpoint from the environment, default service name", func(t *testing.T) {
				clearOTELEnv(t)
				rc, url := start(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
				t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret,x-tenant=acme")
				t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,k8s.namespace.name=dl")
				exportOne(t, TracingConfig{Export: true, Protocol: proto, Role: "worker", Version: "v9"}, "admit")
				names, res := rc.spans()
				if len(names) != 1 || names[0] != "admit" {
					t.Fatalf("received spans %q, want the one span \"admit\"", names)
				}
				for k, want := range map[string]string{"service.name": "sluice-worker", "sluice.role": "worker",
					"service.version": "v9", "deployment.environment": "staging", "k8s.namespace.name": "dl"} {
					if got := res[0][k]; got != want {
						t.Errorf("resource %s = %q, want %q", k, got, want)
					}
				}
				if got := rc.header("authorization"); got != "Bearer s3cret" {
					t.Errorf("authorization header %q, want the one in OTEL_EXPORTER_OTLP_HEADERS", got)
				}
				if got := rc.header("x-tenant"); got != "acme" {
					t.Errorf("x-tenant header %q, want the one in OTEL_EXPORTER_OTLP_HEADERS", got)
				}
			})

			t.Run("OTEL_SERVICE_NAME wins, --otlp-endpoint host:port wins over the environment", func(t *testing.T) {
				clearOTELEnv(t)
				rc, url := start(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1") // nothing listens
				t.Setenv("OTEL_SERVICE_NAME", "downloads-eu")
				t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored-for-OTEL_SERVICE_NAME")
				exportOne(t, TracingConfig{Export: true, Endpoint: strings.TrimPrefix(url, "http://"), Protocol: proto, Role: "edge"}, "stream")
				names, res := rc.spans()
				if len(names) != 1 {
					t.Fatalf("received spans %q, want one", names)
				}
				if got := res[0]["service.name"]; got != "downloads-eu" {
					t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's downloads-eu", got)
				}
				if got := res[0]["sluice.role"]; got != "edge" {
					t.Errorf("sluice.role = %q, want edge", got)
				}
			})

			t.Run("always_off exports nothing", func(t *testing.T) {
				clearOTELEnv(t)
				rc, url := start(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
				t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
				exportOne(t, TracingConfig{Export: true, Protocol: proto, Role: "ingress"}, "request")
				if names, _ := rc.spans(); len(names) != 0 {
					t.Errorf("received spans %q with OTEL_TRACES_SAMPLER=always_off, want none", names)
				}
			})
		})
	}
}

// The ratio sampler is parent-based: a root at ratio 0 is dropped, a span whose
// remote parent was sampled is kept.
func TestTracingParentBasedRatioSampler(t *testing.T) {
	clearOTELEnv(t)
	rc, url := startHTTPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url+"/v1/traces")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")
	ctx := t.Context()
	tr, err := NewTracing(ctx, TracingConfig{Export: true, Role: "ingress"})
	if err != nil {
		t.Fatal(err)
	}
	_, root := tr.Tracer("test").Start(ctx, "root")
	root.End()
	child := WithTraceParent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_, span := tr.Tracer("test").Start(child, "child-of-sampled")
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if names, _ := rc.spans(); len(names) != 1 || names[0] != "child-of-sampled" {
		t.Errorf("received spans %q, want only child-of-sampled", names)
	}
}

func TestTracingOffExportsNothingAndRefusesUnknownProtocol(t *testing.T) {
	tr, err := NewTracing(t.Context(), TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Tracer("x") == nil || tr.Shutdown(t.Context()) != nil {
		t.Error("tracing off: want a no-op tracer that shuts down cleanly")
	}
	if _, err := NewTracing(t.Context(), TracingConfig{Export: true, Protocol: "http/json"}); err == nil {
		t.Error("protocol http/json: want an error, sluice exports http/protobuf or grpc")
	}
}
