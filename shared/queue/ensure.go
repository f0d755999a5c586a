package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one create call: without it a call that the server never
// answers (no meta leader yet) would take the caller's whole deadline in one attempt.
const attemptTimeout = 5 * time.Second

// Ensure runs create (one CreateOrUpdate of a stream, consumer or bucket) until it
// succeeds or ctx ends, with backoff from 100 ms to 2 s between attempts.
//
// Roles started together against a fresh cluster race for the meta leader while it
// settles: the first calls time out, find no responders, or are answered "no suitable
// peers" or "temporarily unavailable" (FIELD-NOTES). Those pass, so they are retried.
// A definite refusal (JetStream disabled, a configuration the server rejects) is
// returned at once.
//
// When ctx ends, the error is the most telling one seen: the server's own answer if it
// gave one (such as "insufficient storage resources available"), else the last
// failure, never a bare "context deadline exceeded" that hides why.
func Ensure[T any](ctx context.Context, what string, create func(context.Context) (T, error)) (T, error) {
	var zero T
	wait := 100 * time.Millisecond
	start := time.Now()
	var last, answer error // the last failure; the last one the server answered with
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := create(actx)
		cancel()
		if err == nil {
			return v, nil
		}
		if definite(err) {
			return zero, fmt.Errorf("%s: %w", what, err)
		}
		last = err
		if _, ok := errors.AsType[*jetstream.APIError](err); ok {
			answer = err
		}
		select {
		case <-ctx.Done():
			shown := last
			if answer != nil {
				shown = answer
			}
			return zero, &EnsureError{What: what, Attempts: attempt, Took: time.Since(start), Err: shown}
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// EnsureError is a creation that did not succeed before its deadline; Err is the
// most telling failure of its attempts (see Ensure).
type EnsureError struct {
	What     string
	Attempts int
	Took     time.Duration
	Err      error
}

func (e *EnsureError) Error() string {
	return fmt.Sprintf("%s: %v (gave up after %d attempts in %s)", e.What, e.Err, e.Attempts, e.Took.Round(time.Millisecond))
}

func (e *EnsureError) Unwrap() error { return e.Err }

// definite reports the refusals that no retry changes.
func definite(err error) bool {
	apiErr, ok := errors.AsType[*jetstream.APIError](err)
	if !ok {
		return errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount,
		10074: // replicas > 1 on a server that is not clustered
		return true
	case 10005, // no suitable peers for placement: peers may still be joining
		// Another role's create of the same asset won the race: this call tried to
		// create what now exists, and its next attempt updates it. (A real conflict,
		// a foreign stream on our subjects, persists and is shown at the deadline.)
		10058, // stream name already in use with a different configuration
		10065, // subjects overlap with an existing stream
		10148, // consumer already exists
		10013: // consumer name already in use
		return false
	}
	// Other 400s are a configuration the server rejects (a bad name, a change it
	// does not allow); 5xx answers (not leader, temporarily unavailable, resources
	// not known yet) may pass.
	return apiErr.Code == 400
}
