package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is one process's OpenTelemetry tracer provider: spans exported over OTLP
// (HTTP or gRPC) when exporting is on, none otherwise (the W3C trace context is still
// carried through, so a trace started by a client's traceparent stays whole).
type Tracing struct {
	provider trace.TracerProvider
	exports  bool
	shutdown func(context.Context) error
}

// OTLP protocols, as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// TracingConfig says whether and where a process exports its spans. Everything else
// comes from OpenTelemetry's own environment variables, read by the SDK itself:
// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT (when Endpoint is empty), _HEADERS,
// _TIMEOUT, _INSECURE, _CERTIFICATE; OTEL_TRACES_SAMPLER and _ARG; OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES; OTEL_BSP_*.
type TracingConfig struct {
	// Export turns exporting on: --otlp-endpoint or an OTLP endpoint variable is set.
	Export bool
	// Endpoint is --otlp-endpoint: a collector URL ("http://collector:4318") or
	// host:port for plain text. Over HTTP spans go to /v1/traces unless the URL has
	// a path of its own. Empty leaves the endpoint to the exporter's environment.
	Endpoint string
	// Protocol is ProtocolHTTP (when empty) or ProtocolGRPC.
	Protocol string
	Role     string
	Version  string
}

// NewTracing builds the tracer provider of a process. Its resource names the service
// "sluice-<role>" unless OTEL_SERVICE_NAME (or service.name in
// OTEL_RESOURCE_ATTRIBUTES) says otherwise; the sampler is the SDK's default
// (parent-based, always at a root) unless OTEL_TRACES_SAMPLER sets one.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	if !cfg.Export {
		return &Tracing{provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}, nil
	}
	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Later sources win: the environment overrides the defaults.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", "sluice-"+cfg.Role),
			attribute.String("service.version", cfg.Version),
			attribute.String("sluice.role", cfg.Role),
		),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("trace resource (OTEL_RESOURCE_ATTRIBUTES?): %w", err)
	}
	// No WithSampler: an explicit sampler would override OTEL_TRACES_SAMPLER.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{provider: tp, exports: true, shutdown: tp.Shutdown}, nil
}

func newExporter(ctx context.Context, cfg TracingConfig) (sdktrace.SpanExporter, error) {
	endpoint := cfg.Endpoint
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	switch cfg.Protocol {
	case "", ProtocolHTTP:
		var opts []otlptracehttp.Option
		if endpoint != "" {
			u, err := url.Parse(endpoint)
			if err != nil {
				return nil, fmt.Errorf("--otlp-endpoint %s: %w", endpoint, err)
			}
			if u.Path == "" || u.Path == "/" {
				// A collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT would be.
				u.Path = "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp/http exporter: %w", err)
		}
		return exp, nil
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			// http:// is plain text, https:// TLS; the path is not used by gRPC.
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp/grpc exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("OTLP protocol %q: sluice exports %s or %s", cfg.Protocol, ProtocolHTTP, ProtocolGRPC)
}

// Provider is the tracer provider (for instrumentation libraries).
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Exports tells whether spans go anywhere: without an exporter, the provider is a
// no-op and only the trace context a client sent is carried along.
func (t *Tracing) Exports() bool { return t.exports }

// Tracer returns a tracer for one component.
func (t *Tracing) Tracer(component string) trace.Tracer {
	return t.provider.Tracer("github.com/sluice-dl/sluice/" + component)
}

// Shutdown exports the spans still buffered, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// Propagator is the W3C trace context format sluice carries between processes: HTTP
// headers at the ingress, JetStream message headers, the ticket in the ledger and the
// download token (see TraceParent).
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// TraceParent is the W3C traceparent of the span in ctx, "" when there is none. It is
// how the trace context travels where there are no headers: in the ticket's ledger
// entry (worker to worker) and in the download token (worker to edge).
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	Propagator().Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx with the remote span context tp (a W3C traceparent)
// as parent of the spans started from it; ctx itself when tp is empty or malformed.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return Propagator().Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
