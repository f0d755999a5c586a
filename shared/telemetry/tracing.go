package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is one process's OpenTelemetry tracer provider: spans exported over OTLP/HTTP
// when an endpoint is set, none otherwise (the W3C trace context is still carried
// through, so a trace started by a client's traceparent stays whole).
type Tracing struct {
	provider trace.TracerProvider
	shutdown func(context.Context) error
}

// NewTracing builds the tracer provider of a process running role. endpoint is the
// OTLP/HTTP collector ("http://collector:4318", or host:port for plain HTTP; spans
// go to /v1/traces unless the URL has a path of its own); empty
// turns exporting off. The exporter's environment (OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_BSP_SCHEDULE_DELAY, ...) applies as usual.
func NewTracing(ctx context.Context, endpoint, role, version string) (*Tracing, error) {
	if endpoint == "" {
		return &Tracing{provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}, nil
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint %s: %w", endpoint, err)
	}
	if u.Path == "" || u.Path == "/" {
		// A collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT would be.
		u.Path = "/v1/traces"
		endpoint = u.String()
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint %s: %w", endpoint, err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", "sluice"),
		attribute.String("service.version", version),
		attribute.String("sluice.role", role),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	)
	return &Tracing{provider: tp, shutdown: tp.Shutdown}, nil
}

// Provider is the tracer provider (for instrumentation libraries).
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

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
