package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler adds trace_id (and span_id) to every record logged with a context that
// carries a span, so a log line leads to its trace. Log with the *Context methods
// (InfoContext, ...) for it to apply.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// RequestLevel is the level of a request's log line: answered requests are routine
// (debug: at thousands a second, a line each at info costs a fifth of the CPU),
// refusals are worth a look (info), failures more (warn).
func RequestLevel(status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelWarn
	case status >= 400:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// ReplaceDurations writes durations as Go duration strings ("1.5ms", "2m0s") instead
// of slog's JSON default, integer nanoseconds, which a reader has to divide in their
// head. It is a slog.HandlerOptions.ReplaceAttr.
func ReplaceDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
