// Package queue is sluice's use of NATS JetStream: the connection, the durable stream
// that holds accepted download tickets, the pull consumer shared by every worker, and
// the message that carries a ticket.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/admission"
)

// Errors callers branch on.
var (
	// ErrUnavailable: JetStream cannot be reached or did not acknowledge in time.
	ErrUnavailable = errors.New("queue unavailable")
	// ErrFull: the stream reached its size bound and refuses new tickets.
	ErrFull = errors.New("queue full")
)

// Names of the ticket stream and its consumer.
const (
	TicketStream      = "SLUICE_TICKETS"
	TicketSubjectBase = "sluice.tickets."
	AdmissionConsumer = "admission"
)

// Connect dials NATS. It reconnects forever (nats.go's default gives up after about two
// minutes) and keeps no reconnect buffer, so a publish during an outage fails at once
// instead of hanging until its timeout.
func Connect(url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// StreamConfig bounds a work-queue stream: the ticket stream, and the release stream
// (ReleaseStreamConfig). Zero fields take the defaults.
type StreamConfig struct {
	Replicas    int           // 1 on one machine, 3 in a cluster
	MaxMsgs     int64         // backlog bound: publishing past it answers ErrFull
	MaxBytes    int64         // size bound of the backlog
	DedupWindow time.Duration // how long a Nats-Msg-Id is remembered
	AckWait     time.Duration // a worker that stops heart-beating loses its messages after this
}

func (c *StreamConfig) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxMsgs == 0 {
		c.MaxMsgs = 1_000_000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
}

// workQueue is the stream both kinds of work live in: a message stays until a worker
// acknowledges it, so the stream's size is the unprocessed backlog, and past the bound
// a publish is refused (DiscardNew answers ErrFull) rather than anything already
// accepted dropped.
func (c *StreamConfig) workQueue(name, description, subjects string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxMsgs:     c.MaxMsgs,
		MaxBytes:    c.MaxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  c.DedupWindow,
		MaxAge:      7 * 24 * time.Hour,
		// Concurrent publishes may be stored in atomic batches (groupCommit).
		AllowAtomicPublish: true,
	}
}

// EnsureTickets creates or updates the ticket stream and the admission consumer.
// The stream is a work queue: a ticket's message stays until a worker acknowledges it,
// which happens only once the ticket has ended, so state lost from Redis is rebuilt
// from the message. Each creation is retried until ctx ends (Ensure): roles started
// together against a fresh cluster all come up.
func EnsureTickets(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Consumer, error) {
	cfg.setDefaults()
	stream := cfg.workQueue(TicketStream, "accepted download tickets, one message per ticket", TicketSubjectBase+">")
	if err := ensureStream(ctx, js, stream); err != nil {
		return nil, err
	}
	return Ensure(ctx, "create consumer "+AdmissionConsumer, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, TicketStream, jetstream.ConsumerConfig{
			Durable:     AdmissionConsumer,
			Description: "workers admitting download tickets",
			AckPolicy:   jetstream.AckExplicitPolicy,
			AckWait:     cfg.AckWait,
			// Waiting happens in Redis, with the message kept in progress: a worker holds
			// every ticket it has enqueued, so the pending bound must cover the backlog.
			MaxAckPending: int(min(cfg.MaxMsgs, 1_000_000)),
			// Redeliveries happen only when a worker died or shut down holding tickets.
			MaxDeliver: 100,
			Replicas:   cfg.Replicas,
		})
	})
}

// ensureStream creates or updates a stream and returns once it has a leader: until
// then a publish to a replicated stream finds no responder (a single-replica stream
// has one at once).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := Ensure(ctx, "create stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return err
	}
	_, err = Ensure(ctx, "elect a leader for stream "+cfg.Name, func(ctx context.Context) (struct{}, error) {
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			return struct{}{}, err
		}
		if c := s.CachedInfo().Cluster; c != nil && c.Leader == "" {
			return struct{}{}, errNoLeader
		}
		return struct{}{}, nil
	})
	return err
}

var errNoLeader = errors.New("no leader elected yet")

// Ticket is the message that carries an accepted ticket: everything needed to rebuild
// its state in the ledger.
type Ticket struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	ETag        string `json:"etag"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	Tenant      string `json:"tenant"`
	// Owner is the tenant whose API key made the ticket; empty for an anonymous
	// ticket, whose id is its bearer capability.
	Owner   string    `json:"owner,omitempty"`
	Created time.Time `json:"created_at"`

	// The message's, not its body's: read back with the message (Lookup, Each,
	// Received).
	//
	// TraceParent is the W3C trace context of the request that created the ticket,
	// set by its creator and carried in the message's traceparent header, so that
	// whichever worker admits it, and whoever restores it, continues that trace.
	TraceParent string `json:"-"`
	// Seq is the message's stream sequence: the ticket's place in line. Publish
	// answers it.
	Seq uint64 `json:"-"`
}

// traceHeader is the message header that carries Ticket.TraceParent.
const traceHeader = "traceparent"

// Ledger is the ticket as the admission ledger records it.
func (t Ticket) Ledger() admission.Ticket {
	return admission.Ticket{
		ID: t.ID, Object: t.Object, ETag: t.ETag, Size: t.Size, ContentType: t.ContentType,
		Tenant: t.Tenant, Owner: t.Owner, Seq: t.Seq, Created: t.Created, TraceParent: t.TraceParent,
	}
}

// decodeTicket reads a ticket message: its body, its trace header and its sequence.
func decodeTicket(data []byte, hdr nats.Header, seq uint64) (Ticket, error) {
	var t Ticket
	if err := json.Unmarshal(data, &t); err != nil {
		return Ticket{}, fmt.Errorf("ticket message at sequence %d: %w", seq, err)
	}
	if t.ID == "" || t.Tenant == "" {
		return Ticket{}, fmt.Errorf("ticket message at sequence %d: no id or tenant", seq)
	}
	t.TraceParent, t.Seq = hdr.Get(traceHeader), seq
	return t, nil
}

// Received decodes a ticket message as a consumer delivers it; an error means a
// malformed message (to be terminated).
func Received(msg jetstream.Msg) (Ticket, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return Ticket{}, fmt.Errorf("ticket message on %s: %w", msg.Subject(), err)
	}
	return decodeTicket(msg.Data(), msg.Headers(), meta.Sequence.Stream)
}

// Publisher publishes tickets and waits for JetStream's acknowledgement. Concurrent
// publishes leave together, pipelined or in atomic batches (groupCommit).
type Publisher struct {
	nc      *nats.Conn
	timeout time.Duration
	batches *groupCommit

	mu sync.Mutex
	// lost is closed when the connection drops (and replaced by a new one): the
	// publishes waiting for an answer then fail at once rather than at their timeout.
	lost chan struct{}
}

// NewPublisher returns a publisher that sends concurrent tickets as mode says and
// whose publishes give up after timeout, or as soon as the connection drops while
// they wait (its disconnect handler is chained). It has a JetStream context of its
// own, whose pipelined publishes are forgotten after timeout too: an answer lost
// without a disconnect (a leader change) leaves nothing pending for ever.
func NewPublisher(nc *nats.Conn, mode PublishMode, timeout time.Duration) (*Publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &Publisher{nc: nc, timeout: timeout, batches: newGroupCommit(js, mode, timeout), lost: make(chan struct{})}
	prev := nc.DisconnectErrHandler()
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		if prev != nil {
			prev(c, err)
		}
		p.mu.Lock()
		close(p.lost)
		p.lost = make(chan struct{})
		p.mu.Unlock()
	})
	return p, nil
}

// Publish stores t durably, its TraceParent in the message's header, and returns its
// stream sequence. The message id is the ticket id, so a retried publish of the same
// ticket is stored once.
func (p *Publisher) Publish(ctx context.Context, t Ticket) (uint64, error) {
	p.mu.Lock()
	lost := p.lost // before the check: a drop after it closes this one
	p.mu.Unlock()
	if !p.nc.IsConnected() {
		return 0, fmt.Errorf("publish ticket: nats is %s: %w", p.nc.Status(), ErrUnavailable)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return 0, fmt.Errorf("encode ticket: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	msg := &nats.Msg{Subject: ticketSubject(t.Tenant, t.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "ticket:"+t.ID)
	if t.TraceParent != "" {
		msg.Header.Set(traceHeader, t.TraceParent)
	}
	seq, err := p.batches.publish(ctx, msg, lost)
	if err != nil {
		return 0, publishError("publish ticket", err)
	}
	return seq, nil
}

// ticketSubject is where a ticket's message is stored: one subject per ticket, so that
// a ticket can be read back by its id alone (LookupTicket).
func ticketSubject(tenant, id string) string { return TicketSubjectBase + tenant + "." + id }

// Tickets reads accepted tickets back from the stream.
type Tickets struct {
	js jetstream.JetStream
}

// NewTickets returns a reader of the ticket stream.
func NewTickets(js jetstream.JetStream) *Tickets { return &Tickets{js: js} }

// ErrNoTicket: the stream holds no message for the ticket (it never existed, or it
// ended and was acknowledged).
var ErrNoTicket = errors.New("no such ticket in the stream")

// Lookup returns a live ticket's message.
func (t *Tickets) Lookup(ctx context.Context, id string) (Ticket, error) {
	s, err := t.js.Stream(ctx, TicketStream)
	if err != nil {
		return Ticket{}, fmt.Errorf("read ticket stream: %v: %w", err, ErrUnavailable)
	}
	m, err := s.GetLastMsgForSubject(ctx, TicketSubjectBase+"*."+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Ticket{}, ErrNoTicket
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("read ticket %s from the stream: %v: %w", id, err, ErrUnavailable)
	}
	tk, err := decodeTicket(m.Data, m.Header, m.Sequence)
	if err != nil || tk.ID != id {
		return Ticket{}, fmt.Errorf("ticket %s: unreadable message at sequence %d", id, m.Sequence)
	}
	return tk, nil
}

// Each calls fn for every ticket the stream holds, oldest first: what a rebuilt
// ledger is filled from. It reads with direct gets (a work-queue stream admits no
// second consumer) and stops at the first error of fn.
func (t *Tickets) Each(ctx context.Context, fn func(tk Ticket) error) error {
	s, err := t.js.Stream(ctx, TicketStream)
	if err != nil {
		return fmt.Errorf("read ticket stream: %v: %w", err, ErrUnavailable)
	}
	last := s.CachedInfo().State.LastSeq
	for seq := s.CachedInfo().State.FirstSeq; seq != 0 && seq <= last; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(TicketSubjectBase+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // nothing at or after seq
		}
		if err != nil {
			return fmt.Errorf("read ticket stream at %d: %v: %w", seq, err, ErrUnavailable)
		}
		seq = m.Sequence
		tk, err := decodeTicket(m.Data, m.Header, m.Sequence)
		if err != nil {
			continue // the admission worker terminates malformed messages
		}
		if err := fn(tk); err != nil {
			return err
		}
	}
	return nil
}

// Live reports whether the stream holds any ticket message: tickets that have not
// ended, some of which may be streaming.
func (t *Tickets) Live(ctx context.Context) (bool, error) {
	s, err := t.js.Stream(ctx, TicketStream)
	if err != nil {
		return false, fmt.Errorf("read ticket stream: %v: %w", err, ErrUnavailable)
	}
	return s.CachedInfo().State.Msgs > 0, nil
}

// publishError maps a publish failure onto ErrFull (the stream is at its bound) or
// ErrUnavailable (anything else: the publish may be retried later).
func publishError(what string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10077) {
		return fmt.Errorf("%s: %v: %w", what, apiErr.Description, ErrFull)
	}
	return fmt.Errorf("%s: %v: %w", what, err, ErrUnavailable)
}

// Ping checks that JetStream answers.
func Ping(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}
