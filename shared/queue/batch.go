package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// PublishMode says how a Publisher sends the tickets that arrive together.
type PublishMode int

const (
	// Pipelined sends each ticket as a publish of its own, all of those that arrived
	// together in flight at once on the connection. For servers that acknowledge a
	// message once written and sync it later (nats-server's default): an atomic batch
	// there costs more than it saves, since a single server stages every batch in a
	// file store of its own (created, synced and deleted per batch). Measured with
	// `make bench` on one server: 1.7× the tickets per second of atomic batches and a
	// third of the server's CPU per ticket; on a three-node cluster the two are even.
	Pipelined PublishMode = iota
	// AtomicBatches sends the tickets that arrived together as one JetStream atomic
	// batch. For servers that sync every message before acknowledging it
	// (sync_interval: always, as serve's embedded server does): each message is then
	// fsynced on its own, about 5.6k messages/s on one disk whatever the concurrency,
	// while a batch is stored with a handful of fsyncs whatever its size.
	AtomicBatches
)

// groupCommit coalesces concurrent publishes, the group commit JetStream lacks, and
// sends each group as its mode says. Each caller still returns only once its own
// message is durably stored.
//
// Nobody waits to fill a group: a publish that finds fewer than maxFlushers groups in
// flight starts one at once (alone, it is a plain publish); publishes that arrive while
// every flusher is busy queue up and leave together in the next group. So a group is
// as large as the load makes it, and latency at low load is one publish.
//
// An atomic batch holding a message whose Nats-Msg-Id is already stored (a retried
// ticket) is refused whole; any refused or failed batch is sent again message by
// message, each deduplicated by its id, so every caller gets its own answer.
type groupCommit struct {
	js       jetstream.JetStream
	mode     PublishMode
	maxBatch int
	timeout  time.Duration

	mu       sync.Mutex
	pending  []*pendingPub
	flushers int
}

const (
	// maxFlushers bounds the groups one process has in flight (the server allows 50
	// open atomic batches per stream by default, shared by every ingress).
	maxFlushers = 4
	// defaultMaxBatch stays well under the server's 1,000 messages per atomic batch;
	// past a few hundred a batch gains little and its commit waits longer.
	defaultMaxBatch = 256
)

type pendingPub struct {
	msg  *nats.Msg
	done chan pubResult
}

type pubResult struct {
	seq uint64
	err error
}

func newGroupCommit(js jetstream.JetStream, mode PublishMode, timeout time.Duration) *groupCommit {
	return &groupCommit{js: js, mode: mode, maxBatch: defaultMaxBatch, timeout: timeout}
}

// publish stores msg (which carries its Nats-Msg-Id) and returns its stream sequence;
// it gives up when ctx ends or lost is closed (the connection dropped).
func (g *groupCommit) publish(ctx context.Context, msg *nats.Msg, lost <-chan struct{}) (uint64, error) {
	p := &pendingPub{msg: msg, done: make(chan pubResult, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, p)
	if g.flushers < maxFlushers {
		g.flushers++
		go g.flush()
	}
	g.mu.Unlock()
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		// It may still be stored; a retry with the same id is deduplicated.
		return 0, ctx.Err()
	case <-lost:
		// The same: its answer cannot come on this connection.
		return 0, errors.New("the connection to NATS dropped while waiting for the answer")
	}
}

// flush sends batches until nothing is pending, then ends.
func (g *groupCommit) flush() {
	for {
		g.mu.Lock()
		n := min(len(g.pending), g.maxBatch)
		if n == 0 {
			g.flushers--
			g.mu.Unlock()
			return
		}
		batch := g.pending[:n:n]
		g.pending = g.pending[n:]
		g.mu.Unlock()
		g.send(batch)
	}
}

func (g *groupCommit) send(batch []*pendingPub) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if len(batch) == 1 {
		ack, err := g.js.PublishMsg(ctx, batch[0].msg)
		batch[0].done <- result(ack, err)
		return
	}
	if g.mode == Pipelined {
		g.sendEach(ctx, batch)
		return
	}
	msgs := make([]*nats.Msg, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
	}
	// No flow control: the batch is small and the commit's answer tells it all.
	ack, err := jetstreamext.PublishMsgBatch(ctx, g.js, msgs, jetstreamext.BatchFlowControl{})
	if err == nil {
		// An atomic batch is stored as consecutive sequences ending at the commit.
		first := ack.Sequence - uint64(len(batch)) + 1
		for i, p := range batch {
			p.done <- pubResult{seq: first + uint64(i)}
		}
		return
	}
	g.sendEach(ctx, batch)
}

// sendEach publishes a group's messages on their own, all in flight at once: the
// pipelined mode, and an atomic batch that was refused. A message the refused batch
// did store (a server without atomic batches stores them one by one) is acknowledged
// as a duplicate with its sequence.
func (g *groupCommit) sendEach(ctx context.Context, batch []*pendingPub) {
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, p := range batch {
		for _, h := range []string{jetstreamext.BatchIDHeader, jetstreamext.BatchSeqHeader, jetstreamext.BatchCommitHeader} {
			p.msg.Header.Del(h)
		}
		f, err := g.js.PublishMsgAsync(p.msg)
		if err != nil {
			p.done <- result(nil, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			batch[i].done <- result(ack, nil)
		case err := <-f.Err():
			batch[i].done <- result(nil, err)
		case <-ctx.Done():
			batch[i].done <- result(nil, fmt.Errorf("no acknowledgement: %w", ctx.Err()))
		}
	}
}

func result(ack *jetstream.PubAck, err error) pubResult {
	if err != nil {
		return pubResult{err: err}
	}
	if ack == nil {
		return pubResult{err: errors.New("no acknowledgement")}
	}
	return pubResult{seq: ack.Sequence}
}
