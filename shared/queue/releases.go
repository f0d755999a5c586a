package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/api"
)

// Names of the release-event streams and their consumer.
const (
	ReleaseStream      = "SLUICE_RELEASES"
	ReleaseSubjectBase = "sluice.releases."
	// ReleaseAPISubject carries events published through POST /api/v1/releases.
	ReleaseAPISubject = ReleaseSubjectBase + "api"
	// ReleaseMinIOSubject is where MinIO bucket notifications (NATS target with
	// JetStream) are published; they carry no message id.
	ReleaseMinIOSubject = ReleaseSubjectBase + "minio"
	ReleaseConsumer     = "releases"

	DeadReleaseStream  = "SLUICE_RELEASES_DEAD"
	DeadReleaseSubject = "sluice.dead.releases"

	// Headers of a dead-lettered event.
	HeaderDeadReason   = "Sluice-Dead-Reason"
	HeaderDeadSubject  = "Sluice-Dead-Subject"
	HeaderDeadAttempts = "Sluice-Dead-Attempts"
)

// ReleaseStreamConfig bounds the release stream and its dead letters.
type ReleaseStreamConfig struct {
	StreamConfig
	MaxDead int64 // dead letters kept (oldest dropped first)
}

func (c *ReleaseStreamConfig) setDefaults() {
	c.StreamConfig.setDefaults()
	if c.MaxDead == 0 {
		c.MaxDead = 100_000
	}
}

// EnsureReleases creates or updates the release stream, its dead-letter stream and the
// consumer every worker shares. The release stream is a work queue bounded by
// MaxMsgs/MaxBytes with DiscardNew: its size is the unprocessed backlog, and past the
// bound a publish is refused (ErrFull) rather than anything already accepted dropped.
func EnsureReleases(ctx context.Context, js jetstream.JetStream, cfg ReleaseStreamConfig) (jetstream.Consumer, error) {
	cfg.setDefaults()
	streams := []jetstream.StreamConfig{
		cfg.workQueue(ReleaseStream, "release events waiting to be verified and catalogued", ReleaseSubjectBase+">"),
		{
			Name:        DeadReleaseStream,
			Description: "release events that could not be processed, with the reason; operators list and replay them",
			Subjects:    []string{DeadReleaseSubject},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxMsgs:     cfg.MaxDead,
			Discard:     jetstream.DiscardOld,
			MaxAge:      30 * 24 * time.Hour,
		},
	}
	for _, sc := range streams {
		if err := ensureStream(ctx, js, sc); err != nil {
			return nil, err
		}
	}
	return Ensure(ctx, "create consumer "+ReleaseConsumer, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, ReleaseStream, jetstream.ConsumerConfig{
			Durable:     ReleaseConsumer,
			Description: "workers verifying and cataloguing release events",
			AckPolicy:   jetstream.AckExplicitPolicy,
			AckWait:     cfg.AckWait,
			// Workers count attempts themselves (metadata.NumDelivered) and move an event
			// to the dead-letter stream after their bound; the server never gives up on
			// an event silently.
			MaxDeliver:    -1,
			MaxAckPending: 10_000,
			Replicas:      cfg.Replicas,
		})
	})
}

// ReleaseEvent is the message that carries one release event accepted by the API:
// the event as the publisher sent it (its members are the message's own), with what
// the ingress adds.
type ReleaseEvent struct {
	// Identity is what makes two events the same event: "id:<event_id>" or, without
	// an event id, "obj:<object>@<sha256>".
	Identity string `json:"identity"`
	api.ReleaseEvent
	AcceptedAt time.Time `json:"accepted_at"`
}

// MsgID is the Nats-Msg-Id of an event identity: a fixed-length digest, so that a
// long object key cannot make the header unwieldy.
func MsgID(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return "rel:" + hex.EncodeToString(sum[:16])
}

// BatchResult says what became of a batch.
type BatchResult struct {
	Accepted   int // stored for the first time
	Duplicates int // recognised by JetStream as already stored (same Nats-Msg-Id)
	// Stored[i] reports whether event i is in the stream (new or duplicate).
	Stored []bool
	// NotStored counts events that were not stored because the stream was full or
	// unavailable; they are the ones to send again.
	NotStored int
}

// ReleasePublisher publishes release events asynchronously with a bounded window and
// collects every PubAck.
type ReleasePublisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	window  int
	timeout time.Duration
}

// NewReleasePublisher returns a publisher keeping at most window publishes of one
// batch in flight; a batch gives up after timeout.
func NewReleasePublisher(nc *nats.Conn, window int, timeout time.Duration) (*ReleasePublisher, error) {
	if window <= 0 {
		window = 1024
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8*window), jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &ReleasePublisher{nc: nc, js: js, window: window, timeout: timeout}, nil
}

// PublishBatch stores events, each with Nats-Msg-Id from its identity, and returns
// once every PubAck (or error) is in. When the stream is full or JetStream fails, it
// stops sending, waits for what is in flight, and returns the counts with an error
// wrapping ErrFull or ErrUnavailable.
func (p *ReleasePublisher) PublishBatch(ctx context.Context, events []ReleaseEvent) (BatchResult, error) {
	res := BatchResult{Stored: make([]bool, len(events))}
	if !p.nc.IsConnected() {
		res.NotStored = len(events)
		return res, fmt.Errorf("publish release events: nats is %s: %w", p.nc.Status(), ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	type inflight struct {
		i   int
		fut jetstream.PubAckFuture
	}
	var (
		queue    = make([]inflight, 0, p.window)
		firstErr error
	)
	settle := func(f inflight) {
		select {
		case ack := <-f.fut.Ok():
			res.Stored[f.i] = true
			if ack.Duplicate {
				res.Duplicates++
			} else {
				res.Accepted++
			}
		case err := <-f.fut.Err():
			if firstErr == nil {
				firstErr = publishError("publish release event", err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish release events: %v: %w", ctx.Err(), ErrUnavailable)
			}
		}
	}
	for i, ev := range events {
		if firstErr != nil {
			break
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return res, fmt.Errorf("encode release event: %w", err)
		}
		m := nats.NewMsg(ReleaseAPISubject)
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, MsgID(ev.Identity))
		fut, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.timeout))
		if err != nil {
			firstErr = publishError("publish release event", err)
			break
		}
		queue = append(queue, inflight{i, fut})
		if len(queue) >= p.window {
			settle(queue[0])
			queue = queue[1:]
		}
	}
	for _, f := range queue {
		settle(f)
	}
	for _, ok := range res.Stored {
		if !ok {
			res.NotStored++
		}
	}
	return res, firstErr
}

// DeadLetter is one dead-lettered release event. The API shows it as api.DeadLetter
// (the ingress converts it, in wireDeadLetter).
type DeadLetter struct {
	ID       uint64          `json:"id"`
	Subject  string          `json:"subject"`
	Reason   string          `json:"reason"`
	Attempts int             `json:"attempts"`
	DeadAt   time.Time       `json:"dead_at"`
	Event    json.RawMessage `json:"event"`
}

// ErrDeadNotFound: no dead letter with that id.
var ErrDeadNotFound = errors.New("no dead-lettered event with that id")

// DeadLetters keeps release events that could not be processed.
type DeadLetters struct {
	js jetstream.JetStream
}

// NewDeadLetters returns the dead-letter store over js.
func NewDeadLetters(js jetstream.JetStream) *DeadLetters { return &DeadLetters{js: js} }

// Add stores the event's message with the reason and waits for the PubAck.
func (d *DeadLetters) Add(ctx context.Context, subject string, data []byte, reason string, attempts int) error {
	m := nats.NewMsg(DeadReleaseSubject)
	m.Data = data
	m.Header.Set(HeaderDeadReason, reason)
	m.Header.Set(HeaderDeadSubject, subject)
	m.Header.Set(HeaderDeadAttempts, fmt.Sprint(attempts))
	if _, err := d.js.PublishMsg(ctx, m); err != nil {
		return publishError("dead-letter release event", err)
	}
	return nil
}

// List returns up to limit dead letters, oldest first, starting after id after.
func (d *DeadLetters) List(ctx context.Context, after uint64, limit int) ([]DeadLetter, error) {
	s, err := d.js.Stream(ctx, DeadReleaseStream)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %v: %w", err, ErrUnavailable)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %v: %w", err, ErrUnavailable)
	}
	out := []DeadLetter{}
	seq := max(after+1, info.State.FirstSeq)
	for ; seq <= info.State.LastSeq && len(out) < limit; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // replayed or dropped
		}
		if err != nil {
			return nil, fmt.Errorf("dead letter %d: %v: %w", seq, err, ErrUnavailable)
		}
		out = append(out, deadLetter(raw))
	}
	return out, nil
}

// Count returns how many dead letters are kept.
func (d *DeadLetters) Count(ctx context.Context) (uint64, error) {
	return streamMsgs(ctx, d.js, DeadReleaseStream, "dead letters")
}

// streamMsgs is how many messages stream holds; what names it in errors, which are
// ErrUnavailable.
func streamMsgs(ctx context.Context, js jetstream.JetStream, stream, what string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %w", what, err, ErrUnavailable)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %w", what, err, ErrUnavailable)
	}
	return info.State.Msgs, nil
}

// Replay publishes the dead letter id again to its original subject, under a fresh
// message id, and removes it from the dead-letter stream.
func (d *DeadLetters) Replay(ctx context.Context, id uint64) (DeadLetter, error) {
	s, err := d.js.Stream(ctx, DeadReleaseStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %v: %w", err, ErrUnavailable)
	}
	raw, err := s.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, ErrDeadNotFound
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %v: %w", id, err, ErrUnavailable)
	}
	dl := deadLetter(raw)
	m := nats.NewMsg(dl.Subject)
	m.Data = raw.Data
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("replay:%d:%d", id, raw.Time.UnixNano()))
	if _, err := d.js.PublishMsg(ctx, m); err != nil {
		return DeadLetter{}, publishError("replay dead letter", err)
	}
	if err := s.DeleteMsg(ctx, id); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("remove replayed dead letter %d: %v: %w", id, err, ErrUnavailable)
	}
	return dl, nil
}

func deadLetter(raw *jetstream.RawStreamMsg) DeadLetter {
	attempts := 0
	fmt.Sscan(raw.Header.Get(HeaderDeadAttempts), &attempts)
	ev := json.RawMessage(raw.Data)
	if !json.Valid(raw.Data) {
		b, _ := json.Marshal(string(raw.Data))
		ev = b
	}
	subject := raw.Header.Get(HeaderDeadSubject)
	if subject == "" {
		subject = ReleaseAPISubject
	}
	return DeadLetter{ID: raw.Sequence, Subject: subject, Reason: raw.Header.Get(HeaderDeadReason),
		Attempts: attempts, DeadAt: raw.Time, Event: ev}
}

// Backlog returns how many release events wait in the stream.
func (p *ReleasePublisher) Backlog(ctx context.Context) (uint64, error) {
	return streamMsgs(ctx, p.js, ReleaseStream, "release stream")
}
