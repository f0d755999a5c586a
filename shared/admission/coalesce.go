package admission

import (
	"context"
	"errors"
	"sync"
	"time"
)

// coalescer sends the calls that arrive together as one: one script run, one write,
// one read and one pooled connection for the group, on the client and in Redis, where
// each call alone pays them all (in Redis a script run's fixed cost, the prelude, is
// as large as a fifth of the ticket's work). The ingress records every accepted
// ticket this way, up to 64 requests at a time under load.
//
// Nobody waits to fill a group, as with the ticket publisher's group commit: a call
// that finds fewer than maxFlushers groups in flight is sent at once (alone, it is a
// group of one); calls that arrive while every flusher is busy leave together in the
// next group.
type coalescer struct {
	// send makes one Redis call for a group of calls' arguments, in order, and
	// returns each call's answer, in the same order; an error is every call's.
	send func(ctx context.Context, args [][]any) ([]any, error)

	mu       sync.Mutex
	pending  []*coalescedCall
	flushers int
}

const (
	// coalesceFlushers bounds the groups one ledger has in flight: enough to keep a
	// Redis busy, few enough that load turns into groups rather than connections.
	coalesceFlushers = 4
	// coalesceMaxBatch bounds a group, so that one group's answers are not held
	// behind a long one, nor Redis by one script run.
	coalesceMaxBatch = 64
	// coalesceTimeout bounds a group's round trip once sent: the group outlives the
	// caller that started it, so it runs under none of the callers' contexts.
	coalesceTimeout = 5 * time.Second
	// coalesceMaxPending bounds the calls waiting for a group: past it (Redis is
	// stalled) a call fails at once rather than joining a line that only grows.
	coalesceMaxPending = 4096
)

// errCoalesceFull is a call refused because too many wait for Redis already.
var errCoalesceFull = errors.New("too many calls waiting for Redis")

type coalescedCall struct {
	ctx   context.Context // the caller's: a call whose caller left is not sent
	args  []any
	reply any
	err   error
	sent  bool
	done  chan struct{}
}

// run sends args in the next group and returns the call's answer. It returns when
// the answer is in, or when ctx ends (the call may still be made).
func (c *coalescer) run(ctx context.Context, args []any) (any, error) {
	call := &coalescedCall{ctx: ctx, args: args, done: make(chan struct{})}
	c.mu.Lock()
	if len(c.pending) >= coalesceMaxPending {
		c.mu.Unlock()
		return nil, errCoalesceFull
	}
	c.pending = append(c.pending, call)
	if c.flushers < coalesceFlushers {
		c.flushers++
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		if call.sent {
			return call.reply, call.err
		}
		// Dropped unsent: its context ended.
	case <-ctx.Done():
	}
	return nil, ctx.Err()
}

// flush sends groups until nothing is pending, then ends. Calls whose callers have
// left are dropped, not sent.
func (c *coalescer) flush() {
	for {
		c.mu.Lock()
		var group []*coalescedCall
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
		c.sendGroup(group)
	}
}

func (c *coalescer) sendGroup(group []*coalescedCall) {
	// The first caller's context lends the group its values (the trace), not its end.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), coalesceTimeout)
	defer cancel()
	args := make([][]any, len(group))
	for i, call := range group {
		args[i] = call.args
	}
	replies, err := c.send(ctx, args)
	if err == nil && len(replies) != len(group) {
		err = errors.New("the ledger answered for another number of calls than it was sent")
	}
	for i, call := range group {
		call.sent, call.err = true, err
		if err == nil {
			call.reply = replies[i]
		}
		close(call.done)
	}
}
