package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerOptions tunes a Breaker. Zero values take the defaults.
type BreakerOptions struct {
	// ConsecutiveFailures trips the breaker after this many failures in a row (5).
	ConsecutiveFailures uint32
	// FailureRatio trips it when this share of the calls in Window failed (0.5),
	// once there were at least MinRequests of them (20). Above 1 disables the rule.
	FailureRatio float64
	MinRequests  uint32
	Window       time.Duration // 60s, counted in six rolling buckets
	// OpenTimeout is how long an open breaker refuses calls before it lets one
	// probe call through (5s). One successful probe closes it again.
	OpenTimeout time.Duration
	// CallTimeout bounds Stat and Ping when the caller set no deadline (2s), so
	// that a hung backend counts as failing instead of holding requests.
	CallTimeout time.Duration
	Logger      *slog.Logger // state changes; nil discards them
}

func (o BreakerOptions) withDefaults() BreakerOptions {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.FailureRatio <= 0 {
		o.FailureRatio = 0.5
	}
	if o.MinRequests == 0 {
		o.MinRequests = 20
	}
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 5 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Breaker is a Store that stops calling its inner store while that store is
// unavailable, answering ErrUnavailable at once instead, and lets calls through
// again by itself once a probe call succeeds.
//
// Only unavailability counts against the backend: errors wrapping ErrUnavailable,
// and calls the backend left unanswered for a full CallTimeout. Answers about the
// object (ErrNotFound, ErrChanged, any other error the backend returned) show the
// backend is up and count as successes. Invalid keys never reach the backend, and
// calls whose caller gave up first (canceled, or a deadline shorter than
// CallTimeout) are not counted at all, so clients cannot trip the breaker.
//
// Open goes through the breaker only until the stream starts: the returned reader
// is the inner store's own (a *LocalReader keeps its sendfile path).
type Breaker struct {
	inner       Store
	name        string
	cb          *gobreaker.TwoStepCircuitBreaker[struct{}]
	callTimeout time.Duration
}

var _ Store = (*Breaker)(nil)

// errCallerGone marks, for gobreaker, a call that ended because its caller did.
var errCallerGone = errors.New("caller gave up")

// NewBreaker wraps inner with a circuit breaker called name (used in errors and logs).
func NewBreaker(inner Store, name string, opts BreakerOptions) *Breaker {
	opts = opts.withDefaults()
	log := opts.Logger.With("breaker", name)
	st := gobreaker.Settings{
		Name:         name,
		MaxRequests:  1,
		Interval:     opts.Window,
		BucketPeriod: opts.Window / 6,
		Timeout:      opts.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= opts.ConsecutiveFailures {
				return true
			}
			settled := c.TotalSuccesses + c.TotalFailures
			return settled >= opts.MinRequests && float64(c.TotalFailures) >= opts.FailureRatio*float64(settled)
		},
		// Refused credentials are an answer: the breaker stays closed, so that every
		// caller learns the reason instead of "breaker is open".
		IsSuccessful: func(err error) bool {
			var denied *AccessError
			return !errors.Is(err, ErrUnavailable) || errors.As(err, &denied)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("object store breaker changed state", "from", from.String(), "to", to.String())
		},
	}
	return &Breaker{
		inner:       inner,
		name:        name,
		cb:          gobreaker.NewTwoStepCircuitBreaker[struct{}](st),
		callTimeout: opts.CallTimeout,
	}
}

// State returns "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }

// Stat returns the current version of key.
func (b *Breaker) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	var info Info
	err := b.call(ctx, waitOnly|defaultTimeout, func(ctx context.Context) error {
		var err error
		info, err = b.inner.Stat(ctx, key)
		return err
	})
	return info, err
}

// Open opens a section of key through the inner store.
func (b *Breaker) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	err := b.call(ctx, waitOnly, func(ctx context.Context) error {
		var err error
		rc, err = b.inner.Open(ctx, key, offset, length, etag)
		return err
	})
	return rc, err
}

// Put stores r under key through the inner store.
func (b *Breaker) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	var info Info
	err := b.call(ctx, 0, func(ctx context.Context) error {
		var err error
		info, err = b.inner.Put(ctx, key, r, size, contentType)
		return err
	})
	return info, err
}

// Ping checks the inner store, unless the breaker is open.
func (b *Breaker) Ping(ctx context.Context) error {
	return b.call(ctx, waitOnly|defaultTimeout, b.inner.Ping)
}

// callKind says how long a call may legitimately take.
type callKind uint8

const (
	// waitOnly: the call only waits for the backend (Put also waits for its source
	// reader), so running out of time means the backend did not answer.
	waitOnly callKind = 1 << iota
	// defaultTimeout: bound the call by CallTimeout when the caller did not.
	defaultTimeout
)

// call runs fn if the breaker allows it and reports the outcome.
func (b *Breaker) call(ctx context.Context, kind callKind, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err // a probe slot is not spent on a caller that has already gone
	}
	done, err := b.cb.Allow()
	if err != nil {
		return fmt.Errorf("%w: %s breaker is %s: %w", ErrUnavailable, b.name, b.State(), err)
	}
	callCtx := ctx
	_, hasDeadline := ctx.Deadline()
	if kind&defaultTimeout != 0 && !hasDeadline {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, b.callTimeout)
		defer cancel()
	}
	start := time.Now()
	err = fn(callCtx)
	switch {
	case err == nil:
		done(nil)
	case ctx.Err() != nil:
		// The caller's own context ended. Only a caller that gave the backend at least
		// CallTimeout tells us something about the backend.
		deadline, _ := ctx.Deadline()
		if kind&waitOnly != 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && deadline.Sub(start) >= b.callTimeout {
			err = fmt.Errorf("%w: %s gave no answer within %s: %w", ErrUnavailable, b.name, deadline.Sub(start).Round(time.Millisecond), err)
			done(err)
		} else {
			done(errCallerGone)
		}
	case callCtx.Err() != nil:
		err = fmt.Errorf("%w: %s gave no answer within %s: %w", ErrUnavailable, b.name, b.callTimeout, err)
		done(err)
	default:
		done(err)
	}
	return err
}
