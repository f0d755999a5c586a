package signer

import (
	"context"
	"errors"
	"net/http"

	"github.com/sluice-dl/sluice/shared/objstore"
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
	Streaming(ctx context.Context, c Claims) (_ context.Context, end func(err error))
}

type nopObserver struct{}

func (nopObserver) Refused(context.Context, string) {}
func (nopObserver) Streaming(ctx context.Context, _ Claims) (context.Context, func(error)) {
	return ctx, func(error) {}
}

// Reasons a download is refused, as RefusalReason names them.
const (
	ReasonInvalid       = "invalid"        // 403: forged, tampered, malformed
	ReasonExpired       = "expired"        // 410: the link's start window passed
	ReasonSlotNotHeld   = "slot_not_held"  // 410: the ticket's slot lapsed, was released or re-granted
	ReasonTooMany       = "too_many"       // 429: too many connections on one link
	ReasonObjectChanged = "object_changed" // 410: the object is no longer the version the link names
)

// RefusalReason names why err refused a download with a token-related reason, or ""
// when the refusal is about something else.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrTokenInvalid):
		return ReasonInvalid
	case errors.Is(err, ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, errObjectChanged), errors.Is(err, objstore.ErrChanged):
		return ReasonObjectChanged
	}
	if st, ok := errors.AsType[statusError](err); ok {
		switch st.HTTPStatus() {
		case http.StatusGone:
			return ReasonSlotNotHeld
		case http.StatusTooManyRequests:
			return ReasonTooMany
		}
	}
	return ""
}
