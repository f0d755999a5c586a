package signer

import (
	"context"
	"errors"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/shared/token"
)

// EdgeObserver is told what the edge does, for metrics, traces and logs. It must not
// block; EdgeConfig.Observer nil observes nothing.
type EdgeObserver interface {
	// Refused is called once for each download request answered with an error status,
	// with a short reason (see RefusalReason), or "" for refusals that are not about
	// the token (storage down, bad range, ...).
	Refused(ctx context.Context, reason string)
	// Streaming is called when a verified GET starts streaming. The context it returns
	// is the stream's (it may carry a trace span, continuing the trace in the token's
	// Trace claim); end is called once the stream is over, with its error.
	Streaming(ctx context.Context, c token.Claims) (_ context.Context, end func(err error))
}

type nopObserver struct{}

func (nopObserver) Refused(context.Context, string) {}
func (nopObserver) Streaming(ctx context.Context, _ token.Claims) (context.Context, func(error)) {
	return ctx, func(error) {}
}

// RefusalReason names why err refused a download with a token-related reason (a
// telemetry.Reject* label value), or "" when the refusal is about something else.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, token.ErrInvalid):
		return telemetry.RejectInvalid
	case errors.Is(err, token.ErrExpired):
		return telemetry.RejectExpired
	case errors.Is(err, errObjectChanged), errors.Is(err, objstore.ErrChanged):
		return telemetry.RejectObjectChanged
	case errors.Is(err, admission.ErrSlotNotHeld):
		return telemetry.RejectSlotNotHeld
	case errors.Is(err, admission.ErrTooManyConnections):
		return telemetry.RejectTooMany
	}
	return ""
}
