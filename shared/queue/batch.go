package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/sluice-dl/sluice/shared/groupcommit"
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

// groupCommit sends concurrent publishes together (groupcommit.Group: the group
// commit JetStream lacks), each group as its mode says. Each caller still returns only
// once its own message is durably stored.
//
// An atomic batch holding a message whose Nats-Msg-Id is already stored (a retried
// ticket) is refused whole; any refused or failed batch is sent again message by
// message, each deduplicated by its id, so every caller gets its own answer.
type groupCommit struct {
	js    jetstream.JetStream
	mode  PublishMode
	group groupcommit.Group[*nats.Msg, uint64]
}

const (
	// maxFlushers bounds the groups one process has in flight (the server allows 50
	// open atomic batches per stream by default, shared by every ingress).
	maxFlushers = 4
	// defaultMaxBatch stays well under the server's 1,000 messages per atomic batch;
	// past a few hundred a batch gains little and its commit waits longer.
	defaultMaxBatch = 256
)

func newGroupCommit(js jetstream.JetStream, mode PublishMode, timeout time.Duration) *groupCommit {
	g := &groupCommit{js: js, mode: mode}
	g.group = groupcommit.Group[*nats.Msg, uint64]{Send: g.send, Flushers: maxFlushers, MaxBatch: defaultMaxBatch, Timeout: timeout}
	return g
}

// publish stores msg (which carries its Nats-Msg-Id) and returns its stream sequence;
// it gives up when ctx ends or lost is closed (the connection dropped). Either way
// the message may still be stored; a retry with the same id is deduplicated.
func (g *groupCommit) publish(ctx context.Context, msg *nats.Msg, lost <-chan struct{}) (uint64, error) {
	seq, err := g.group.Do(ctx, msg, lost)
	if errors.Is(err, groupcommit.ErrAborted) {
		// its answer cannot come on this connection
		return 0, errors.New("the connection to NATS dropped while waiting for the answer")
	}
	return seq, err
}

func (g *groupCommit) send(ctx context.Context, batch []*nats.Msg) []groupcommit.Result[uint64] {
	if len(batch) == 1 {
		ack, err := g.js.PublishMsg(ctx, batch[0])
		return []groupcommit.Result[uint64]{result(ack, err)}
	}
	if g.mode == Pipelined {
		return g.sendEach(ctx, batch)
	}
	// No flow control: the batch is small and the commit's answer tells it all.
	ack, err := jetstreamext.PublishMsgBatch(ctx, g.js, batch, jetstreamext.BatchFlowControl{})
	if err != nil {
		return g.sendEach(ctx, batch)
	}
	// An atomic batch is stored as consecutive sequences ending at the commit.
	out := make([]groupcommit.Result[uint64], len(batch))
	first := ack.Sequence - uint64(len(batch)) + 1
	for i := range out {
		out[i].Value = first + uint64(i)
	}
	return out
}

// sendEach publishes a group's messages on their own, all in flight at once: the
// pipelined mode, and an atomic batch that was refused. A message the refused batch
// did store (a server without atomic batches stores them one by one) is acknowledged
// as a duplicate with its sequence.
func (g *groupCommit) sendEach(ctx context.Context, batch []*nats.Msg) []groupcommit.Result[uint64] {
	out := make([]groupcommit.Result[uint64], len(batch))
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, msg := range batch {
		for _, h := range []string{jetstreamext.BatchIDHeader, jetstreamext.BatchSeqHeader, jetstreamext.BatchCommitHeader} {
			msg.Header.Del(h)
		}
		f, err := g.js.PublishMsgAsync(msg)
		if err != nil {
			out[i] = result(nil, err)
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
			out[i] = result(ack, nil)
		case err := <-f.Err():
			out[i] = result(nil, err)
		case <-ctx.Done():
			out[i] = result(nil, fmt.Errorf("no acknowledgement: %w", ctx.Err()))
		}
	}
	return out
}

func result(ack *jetstream.PubAck, err error) groupcommit.Result[uint64] {
	if err != nil {
		return groupcommit.Result[uint64]{Err: err}
	}
	if ack == nil {
		return groupcommit.Result[uint64]{Err: errors.New("no acknowledgement")}
	}
	return groupcommit.Result[uint64]{Value: ack.Sequence}
}
