package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

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
			start := func(t *testing.T) (*testenv.OTLPReceiver, string) {
				rc := testenv.StartOTLPReceiver(t, proto)
				return rc, rc.URL
			}

			t.Run("endpoint from the environment, default service name", func(t *testing.T) {
				clearOTELEnv(t)
				rc, url := start(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
				t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret,x-tenant=acme")
				t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,k8s.namespace.name=dl")
				exportOne(t, TracingConfig{Export: true, Protocol: proto, Role: "worker", Version: "v9"}, "admit")
				spans := rc.Spans()
				if len(spans) != 1 || spans[0].Name != "admit" {
					t.Fatalf("received spans %v, want the one span \"admit\"", spans)
				}
				for k, want := range map[string]string{"service.name": "sluice-worker", "sluice.role": "worker",
					"service.version": "v9", "deployment.environment": "staging", "k8s.namespace.name": "dl"} {
					if got := spans[0].Resource[k]; got != want {
						t.Errorf("resource %s = %q, want %q", k, got, want)
					}
				}
				if got := rc.Header("authorization"); got != "Bearer s3cret" {
					t.Errorf("authorization header %q, want the one in OTEL_EXPORTER_OTLP_HEADERS", got)
				}
				if got := rc.Header("x-tenant"); got != "acme" {
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
				spans := rc.Spans()
				if len(spans) != 1 {
					t.Fatalf("received spans %v, want one", spans)
				}
				if got := spans[0].Resource["service.name"]; got != "downloads-eu" {
					t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's downloads-eu", got)
				}
				if got := spans[0].Resource["sluice.role"]; got != "edge" {
					t.Errorf("sluice.role = %q, want edge", got)
				}
			})

			t.Run("always_off exports nothing", func(t *testing.T) {
				clearOTELEnv(t)
				rc, url := start(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
				t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
				exportOne(t, TracingConfig{Export: true, Protocol: proto, Role: "ingress"}, "request")
				if spans := rc.Spans(); len(spans) != 0 {
					t.Errorf("received spans %v with OTEL_TRACES_SAMPLER=always_off, want none", spans)
				}
			})
		})
	}
}

// The ratio sampler is parent-based: a root at ratio 0 is dropped, a span whose
// remote parent was sampled is kept.
func TestTracingParentBasedRatioSampler(t *testing.T) {
	clearOTELEnv(t)
	rc := testenv.StartOTLPReceiver(t, ProtocolHTTP)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rc.URL+"/v1/traces")
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
	if spans := rc.Spans(); len(spans) != 1 || spans[0].Name != "child-of-sampled" {
		t.Errorf("received spans %v, want only child-of-sampled", spans)
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
