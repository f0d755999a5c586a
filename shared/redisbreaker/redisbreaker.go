// Package redisbreaker is a circuit breaker for a go-redis client, installed as a hook:
// while Redis is not answering, every command fails at once with ErrOpen instead of
// waiting out its dial or read timeout, so the API answers 503 in microseconds and the
// edge's renewals fail fast (and keep streaming within their grace). One probe a
// second goes through; its success closes the breaker again.
package redisbreaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// ErrOpen: the breaker is open; the command was not sent.
var ErrOpen = errors.New("redis is not answering (circuit breaker open)")

// Options tune the breaker; zero values take the defaults.
type Options struct {
	ConsecutiveFailures uint32        // failures in a row that open it (5)
	OpenTimeout         time.Duration // how long it stays open before a probe (1s)
	Logger              *slog.Logger  // state changes; nil discards them
}

// Breaker is a redis.Hook; add it with AddHook.
type Breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
}

var _ redis.Hook = (*Breaker)(nil)

// errCallerGone marks, for gobreaker, a command that ended because its caller did.
var errCallerGone = errors.New("caller gave up")

// New returns a breaker named name (used in logs and metrics).
func New(name string, o Options) *Breaker {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("breaker", name)
	return &Breaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     o.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.ConsecutiveFailures },
		IsSuccessful: func(err error) bool {
			return err == nil || Answered(err)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("redis breaker changed state", "from", from.String(), "to", to.String())
		},
	})}
}

// Answered reports whether err is Redis's own answer (redis.Nil, a script's error,
// NOSCRIPT): the server is up, whatever the command's outcome.
func Answered(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// State returns "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }

// guarded marks a command's context once the breaker let it through: the commands
// go-redis sends to set up a new connection for it (HELLO, AUTH) run through the hooks
// too, and must not count, or be refused, as a second call.
type guarded struct{}

func (b *Breaker) guard(ctx context.Context, call func(context.Context) error) error {
	if ctx.Value(guarded{}) != nil {
		return call(ctx)
	}
	done, err := b.cb.Allow()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrOpen, err)
	}
	err = call(context.WithValue(ctx, guarded{}, true))
	if err != nil && !Answered(err) && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		done(errCallerGone)
		return err
	}
	done(err)
	return err
}

// DialHook passes dials through: their failures show in the commands that needed them.
func (b *Breaker) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

// ProcessHook guards one command.
func (b *Breaker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return b.guard(ctx, func(ctx context.Context) error { return next(ctx, cmd) })
	}
}

// ProcessPipelineHook guards a pipeline as one call: its first network error counts.
func (b *Breaker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return b.guard(ctx, func(ctx context.Context) error { return next(ctx, cmds) })
	}
}
