package admission

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// coalescer sends the script calls that arrive together as one pipeline: one write,
// one read and one pooled connection for the group, on the client and in Redis,
// where each call alone pays them all. The ingress records every accepted ticket this
// way, 64 requests at a time under load.
//
// Nobody waits to fill a group, as with the ticket publisher's group commit: a call
// that finds fewer than maxFlushers groups in flight is sent at once (alone, it is a
// plain script call); calls that arrive while every flusher is busy leave together
// in the next group.
type coalescer struct {
	rdb redis.UniversalClient

	mu       sync.Mutex
	pending  []*scriptCall
	flushers int
}

const (
	// coalesceFlushers bounds the pipelines one ledger has in flight: enough to keep
	// a Redis busy, few enough that load turns into groups rather than connections.
	coalesceFlushers = 4
	// coalesceMaxBatch bounds a pipeline, so that one group's replies are not held
	// behind a long one.
	coalesceMaxBatch = 64
	// coalesceTimeout bounds a group's round trip once sent: the group outlives the
	// caller that started it, so it runs under none of the callers' contexts.
	coalesceTimeout = 5 * time.Second
	// coalesceMaxPending bounds the calls waiting for a pipeline: past it (Redis is
	// stalled) a call fails at once rather than joining a line that only grows.
	coalesceMaxPending = 4096
)

// errCoalesceFull is a call refused because too many wait for Redis already.
var errCoalesceFull = errors.New("too many calls waiting for Redis")

type scriptCall struct {
	ctx    context.Context // the caller's: a call whose caller left is not sent
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// run calls script as Script.Run would, in the next group. It returns when the call's
// answer is in, or when ctx ends (the call may still be made).
func (c *coalescer) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	call := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	c.mu.Lock()
	if len(c.pending) >= coalesceMaxPending {
		c.mu.Unlock()
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errCoalesceFull)
		return cmd
	}
	c.pending = append(c.pending, call)
	if c.flushers < coalesceFlushers {
		c.flushers++
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		if call.cmd != nil {
			return call.cmd
		}
		// Dropped unsent: its context ended.
	case <-ctx.Done():
	}
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ctx.Err())
	return cmd
}

// flush sends groups until nothing is pending, then ends. Calls whose callers have
// left are dropped, not sent.
func (c *coalescer) flush() {
	for {
		c.mu.Lock()
		var group []*scriptCall
		for len(group) < coalesceMaxBatch && len(c.pending) > 0 {
			call := c.pending[0]
			c.pending = c.pending[1:]
			if call.ctx.Err() != nil {
				close(call.done) // its caller returned already
				continue
			}
			group = append(group, call)
		}
		if len(group) == 0 {
			c.pending = nil
			c.flushers--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.send(group)
	}
}

func (c *coalescer) send(group []*scriptCall) {
	// The first caller's context lends the group its values (the trace), not its end.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), coalesceTimeout)
	defer cancel()
	defer func() {
		for _, call := range group {
			close(call.done)
		}
	}()
	if len(group) == 1 {
		call := group[0]
		call.cmd = call.script.Run(ctx, c.rdb, call.keys, call.args...)
		return
	}
	pipe := c.rdb.Pipeline()
	for _, call := range group {
		call.cmd = call.script.EvalSha(ctx, pipe, call.keys, call.args...)
	}
	_, _ = pipe.Exec(ctx) // each call's error is its own command's
	for _, call := range group {
		// A Redis that restarted or flushed its scripts answers NOSCRIPT: Run sends
		// the script itself, which loads it for the calls after.
		if redis.HasErrorPrefix(call.cmd.Err(), "NOSCRIPT") {
			call.cmd = call.script.Run(ctx, c.rdb, call.keys, call.args...)
		}
	}
}
