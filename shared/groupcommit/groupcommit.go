// Package groupcommit gathers concurrent calls into groups, each sent as one: the
// group commit of a database log, for the services sluice calls once per ticket. The
// ingress records tickets in Redis and publishes them to JetStream this way.
//
// Nobody waits to fill a group: a call that finds fewer than Flushers groups in
// flight starts one at once (alone, it is a group of one); calls that arrive while
// every flusher is busy leave together in the next group. So a group is as large as
// the load makes it, and latency at low load is one call.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Result is one call's answer in a group.
type Result[R any] struct {
	Value R
	Err   error
}

// Group sends the items of concurrent calls together. Set its fields before the
// first call; the zero value of each means the default given.
type Group[T, R any] struct {
	// Send sends one group's items, in the order they arrived, and returns each
	// one's result in the same order. It runs under a context that carries the
	// values of the group's first call (its trace) but none of the callers' ends,
	// bounded by Timeout: a group outlives the caller that started it.
	Send func(ctx context.Context, items []T) []Result[R]
	// Flushers bounds the groups in flight (4): enough to keep a server busy, few
	// enough that load turns into groups rather than connections.
	Flushers int
	// MaxBatch bounds a group's items (64).
	MaxBatch int
	// MaxPending bounds the items waiting for a group: past it (the server is
	// stalled) a call fails at once with ErrFull rather than joining a line that
	// only grows. 0: no bound.
	MaxPending int
	// Timeout bounds a group's Send (5s).
	Timeout time.Duration

	mu       sync.Mutex
	pending  []*call[T, R]
	flushers int
}

// ErrFull is a call refused because MaxPending calls wait already.
var ErrFull = errors.New("too many calls waiting to be sent")

type call[T, R any] struct {
	ctx    context.Context // the caller's: a call whose caller left is not sent
	item   T
	result Result[R]
	sent   bool
	done   chan struct{}
}

// Do sends item in the next group and returns its result. It returns early, with
// ctx's error, when ctx ends, or with ErrAborted when abort closes (nil: never).
// An item whose caller left before its group did is not sent; one whose group left
// may still take effect.
func (g *Group[T, R]) Do(ctx context.Context, item T, abort <-chan struct{}) (R, error) {
	var zero R
	c := &call[T, R]{ctx: ctx, item: item, done: make(chan struct{})}
	g.mu.Lock()
	if g.MaxPending > 0 && len(g.pending) >= g.MaxPending {
		g.mu.Unlock()
		return zero, ErrFull
	}
	g.pending = append(g.pending, c)
	if g.flushers < orDefault(g.Flushers, 4) {
		g.flushers++
		go g.flush()
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		if c.sent {
			return c.result.Value, c.result.Err
		}
		// dropped unsent: its context ended
		return zero, ctx.Err()
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-abort:
		return zero, ErrAborted
	}
}

// ErrAborted is a call that stopped waiting because its abort channel closed.
var ErrAborted = errors.New("stopped waiting for the answer")

// flush sends groups until nothing is pending, then ends. Calls whose callers have
// left are dropped, not sent.
func (g *Group[T, R]) flush() {
	for {
		g.mu.Lock()
		var group []*call[T, R]
		for len(group) < orDefault(g.MaxBatch, 64) && len(g.pending) > 0 {
			c := g.pending[0]
			g.pending[0] = nil
			g.pending = g.pending[1:]
			if c.ctx.Err() != nil {
				close(c.done) // its caller returned already
				continue
			}
			group = append(group, c)
		}
		if len(group) == 0 {
			g.pending = nil
			g.flushers--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.send(group)
	}
}

func (g *Group[T, R]) send(group []*call[T, R]) {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), timeout)
	defer cancel()
	items := make([]T, len(group))
	for i, c := range group {
		items[i] = c.item
	}
	results := g.sendSafely(ctx, items)
	for i, c := range group {
		c.sent = true
		if len(results) == len(group) {
			c.result = results[i]
		} else {
			c.result.Err = fmt.Errorf("a group of %d got %d answers", len(group), len(results))
		}
		close(c.done)
	}
}

// sendSafely is Send, whose panic fails its group's calls rather than the process
// (as net/http answers a panicking handler's request alone): the callers see it as
// their error, and later groups are sent as usual.
func (g *Group[T, R]) sendSafely(ctx context.Context, items []T) (results []Result[R]) {
	defer func() {
		if p := recover(); p != nil {
			results = All[R](len(items), nil, fmt.Errorf("sending a group of %d panicked: %v", len(items), p))
		}
	}()
	return g.Send(ctx, items)
}

// All is the results of a group of n items sent as one call that answered values,
// one per item in order, or err for every item.
func All[R any](n int, values []R, err error) []Result[R] {
	if err == nil && len(values) != n {
		err = fmt.Errorf("%d answers for %d items", len(values), n)
	}
	out := make([]Result[R], n)
	for i := range out {
		if err != nil {
			out[i].Err = err
		} else {
			out[i].Value = values[i]
		}
	}
	return out
}

func orDefault(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
