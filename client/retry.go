package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Defaults of a RetryPolicy.
const (
	// DefaultRetryBudget is how long one outage is retried when the command has no
	// bound of its own.
	DefaultRetryBudget = 5 * time.Minute
	defaultFirstWait   = 250 * time.Millisecond
	// defaultMaxWait caps each wait through an outage, so a client notices within a
	// few seconds that the server is back, whatever Retry-After said.
	defaultMaxWait = 5 * time.Second
	// maxSlowDown caps the wait a 429 (or another "not yet" answer) asks for: coming
	// back before the server's Retry-After is only refused again.
	maxSlowDown = 30 * time.Second
)

// RetryPolicy retries a call through an outage of the server: answers 500, 502, 503
// and 504, refused, reset or timed-out connections, and the server's requests to slow
// down (429, 408). Waits grow exponentially with jitter, never shorter than the
// server's Retry-After and, through an outage, never longer than MaxWait. Any other
// answer (a 4xx) is final at once.
type RetryPolicy struct {
	// Budget bounds one outage: retrying stops this long after the first failure.
	// 0 is DefaultRetryBudget.
	Budget time.Duration
	// Deadline, when set, is the last moment an attempt is made.
	Deadline time.Time
	// FirstWait is the first wait (default 250ms); MaxWait caps each wait through an
	// outage (default 5s).
	FirstWait, MaxWait time.Duration
	// Retryable decides which errors are retried; nil is Retryable.
	Retryable func(error) bool
	// Notify, when set, is told once when an outage begins (what failed and for how
	// long it will be retried) and once when the server answers again.
	Notify func(msg string)
}

// Do calls op until it succeeds, fails with an error that is not retryable, ctx
// ends, or the outage outlasts the budget or the deadline. It returns op's last
// error; after retries it is wrapped in a message saying how long they went on.
func (p RetryPolicy) Do(ctx context.Context, op func() error) error {
	retryable := p.Retryable
	if retryable == nil {
		retryable = Retryable
	}
	pace := &pacer{
		exp: &backoff.ExponentialBackOff{
			InitialInterval:     orDefault(p.FirstWait, defaultFirstWait),
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         orDefault(p.MaxWait, defaultMaxWait),
		},
		maxWait: orDefault(p.MaxWait, defaultMaxWait),
	}
	var began time.Time
	failures := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op()
		if err == nil {
			if failures > 0 && p.Notify != nil {
				p.Notify(fmt.Sprintf("the server answers again after %s; continuing", roundDuration(time.Since(began))))
			}
			return struct{}{}, nil
		}
		if ctx.Err() != nil || !retryable(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		failures++
		if failures == 1 {
			began = time.Now()
			pace.until = began.Add(orDefault(p.Budget, DefaultRetryBudget))
			if !p.Deadline.IsZero() && p.Deadline.Before(pace.until) {
				pace.until = p.Deadline
			}
			if left := time.Until(pace.until); left > 0 && p.Notify != nil {
				p.Notify(fmt.Sprintf("%s; retrying for up to %s", describeFailure(err), roundDuration(left)))
			}
		}
		pace.hint, pace.outage = retryHint(err)
		return struct{}{}, err
	}, backoff.WithBackOff(pace), backoff.WithMaxElapsedTime(0))
	if err != nil && failures > 1 && ctx.Err() == nil && retryable(err) {
		return fmt.Errorf("gave up after %s of retrying: %w", roundDuration(time.Since(began)), err)
	}
	return err
}

// pacer is the wait before the next attempt: jittered exponential backoff, at least
// the server's Retry-After, capped, and never past the end of the outage's budget.
type pacer struct {
	exp     *backoff.ExponentialBackOff
	maxWait time.Duration
	until   time.Time
	hint    time.Duration // Retry-After of the last failure
	outage  bool          // the last failure was an outage, not a "slow down"
}

func (p *pacer) Reset() { p.exp.Reset() }

func (p *pacer) NextBackOff() time.Duration {
	left := time.Until(p.until)
	if left <= 0 {
		return backoff.Stop
	}
	next := max(p.exp.NextBackOff(), p.hint)
	limit := p.maxWait
	if !p.outage {
		limit = max(limit, min(p.hint, maxSlowDown))
	}
	return min(next, limit, left)
}

// retryHint is the server's Retry-After in err, and whether err is an outage (a 5xx
// or a failed connection) rather than a request to slow down.
func retryHint(err error) (time.Duration, bool) {
	if s, ok := errors.AsType[StatusError](err); ok {
		return s.RetryAfterHint(), s.HTTPStatus() >= 500
	}
	return 0, true
}

// StatusError is an HTTP answer that refused a request: an *Error from the API, or
// the download link's refusal as client/fetch reports it.
type StatusError interface {
	error
	HTTPStatus() int
	RetryAfterHint() time.Duration // the answer's Retry-After; 0 when absent
}

var _ StatusError = (*Error)(nil)

// Retryable reports whether a call that failed with err may succeed if made again
// unchanged: the server or one of its dependencies is down (500, 502, 503, 504), it
// asked the client to slow down (429) or to send again (408), or the connection
// failed (refused, reset, cut short, timed out).
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if s, ok := errors.AsType[StatusError](err); ok {
		return RetryableStatus(s.HTTPStatus())
	}
	return ConnectionFailed(err)
}

// RetryableStatus reports whether an answer with this status may be retried.
func RetryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ConnectionFailed reports whether err is a failure to reach the server or to hear
// its whole answer, as opposed to an answer. A name that does not resolve is not
// one: retrying a typo does not help.
func ConnectionFailed(err error) bool {
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		return dns.IsTimeout || dns.IsTemporary
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return true
	}
	_, isOp := errors.AsType[*net.OpError](err)
	return isOp
}

// describeFailure says what went wrong for a person: "server unavailable (503
// redis_unavailable: ...)".
func describeFailure(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		what := "server unavailable"
		if e.Status < 500 {
			what = "server asks to wait"
		}
		detail := fmt.Sprint(e.Status)
		if e.Code != "" {
			detail += " " + e.Code
		}
		if e.Message != "" {
			detail += ": " + e.Message
		}
		return what + " (" + detail + ")"
	}
	if s, ok := errors.AsType[StatusError](err); ok && s.HTTPStatus() >= 500 {
		return "download server unavailable (" + s.Error() + ")"
	}
	if ConnectionFailed(err) {
		return "cannot reach the server (" + err.Error() + ")"
	}
	return err.Error()
}

// roundDuration prints a duration to the second, without trailing zero units
// ("4m", "1m30s", "5s").
func roundDuration(d time.Duration) string {
	s := max(d, 0).Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
