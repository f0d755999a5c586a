// Package admission is the admission ledger: tickets, per-tenant wait queues, the
// global lease semaphore and fair ordering, all held in Redis and changed only by the
// Lua scripts in lua/, so every decision is atomic across any number of workers and
// edges. Time is always Redis TIME.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/groupcommit"
	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("ticket not found")
	// ErrSlotNotHeld: the ticket's slot lapsed, was released or belongs to another grant.
	ErrSlotNotHeld = errors.New("the download slot of this ticket is no longer held")
	// ErrTooManyConnections: the token already has the most connections it may open.
	ErrTooManyConnections = errors.New("too many connections on this download link")
	// ErrFenced: the grant was taken back (its lease lapsed) before the link was issued.
	ErrFenced = errors.New("admission grant lapsed before the link was issued")
	// ErrUnavailable: Redis, which holds the ledger, cannot be reached or did not answer in time.
	ErrUnavailable = errors.New("the admission ledger (Redis) is not answering")
	// ErrRecordsUnavailable: the records in JetStream (limits, idempotency bindings,
	// ended tickets) cannot be read or written.
	ErrRecordsUnavailable = errors.New("the records in NATS JetStream cannot be reached")
	// ErrNoGeneration: the ledger was lost (or never built) and must be rebuilt
	// (Rebuild) before anything is admitted.
	ErrNoGeneration = errors.New("the admission ledger has no generation")
)

// unavailable marks an error from Redis, so that callers can answer 503 naming it.
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}

// Config holds the ledger's timings and default limits.
type Config struct {
	Prefix       string        // key prefix with a hash tag, default "sluice:{adm}:"
	Retain       time.Duration // how long finished tickets stay readable (24h)
	AdmitLease   time.Duration // time a worker has to issue the link after a grant (15s)
	StreamLease  time.Duration // lease of a streaming slot, renewed while bytes flow (30s)
	ResumeGrace  time.Duration // slot kept after the last connection ends incomplete (30s)
	AbandonAfter time.Duration // queued tickets not polled for this long are dropped (5m; 0 = never)
	MaxConns     int           // concurrent connections per token (8)
	GlobalLimit  int           // used until an operator sets one in Redis (10)
	TenantLimit  int           // default per-tenant limit, 0 = none
	RateWindow   time.Duration // window for the completion rate (2m)
	// ExactTenants is up to how many waiting tenants a queued ticket's position is
	// counted exactly, tenant by tenant (64). With more, polls read it from the fair
	// order's shape, shared by the fleet and rebuilt at most once per OrderMaxAge (1s):
	// off by at most half the tenants whose queues reach the ticket's turn, plus what
	// other tenants' joins and cancels changed since the shape was built. OrderMaxAge
	// is also how old SharedStats may be.
	ExactTenants int
	OrderMaxAge  time.Duration
	// The record buckets below are needed by every role but the edge, which only
	// streams; without them the methods that use them fail.
	//
	// Records is the JetStream KV bucket of the operator's limits (queue.SettingsBucket);
	// Redis holds a copy the scripts read, rebuilt from it.
	Records jetstream.KeyValue
	// Bindings is the bucket of Idempotency-Key bindings (queue.IdempotencyBucket).
	Bindings jetstream.KeyValue
	// Ended is the bucket of ended tickets (queue.EndedBucket), kept for Retain.
	Ended jetstream.KeyValue
	// LiveTickets reports whether any accepted ticket may still be live (the ticket
	// stream holds messages). A rebuilt ledger then waits half a StreamLease before it
	// admits, so that the streams admitted before the loss re-register first (edges
	// renew every third of a lease); nil: never.
	LiveTickets func(ctx context.Context) (bool, error)
	// Logger takes what the ledger must say but need not fail for (a limit an earlier
	// version kept that it could not import); nil: slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Prefix == "" {
		c.Prefix = "sluice:{adm}:"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def(&c.Retain, 24*time.Hour)
	def(&c.AdmitLease, 15*time.Second)
	def(&c.StreamLease, 30*time.Second)
	def(&c.ResumeGrace, 30*time.Second)
	def(&c.RateWindow, 2*time.Minute)
	def(&c.OrderMaxAge, time.Second)
	if c.ExactTenants == 0 {
		c.ExactTenants = 64
	}
	if c.MaxConns == 0 {
		c.MaxConns = 8
	}
	if c.GlobalLimit == 0 {
		c.GlobalLimit = 10
	}
}

// Ledger is the admission state shared by every role.
type Ledger struct {
	rdb redis.UniversalClient
	cfg Config
	// accepts groups concurrent Accepts into one enqueue.lua run each: the script's
	// prelude and call are then paid once per group, in Redis and here. The ingress
	// records every accepted ticket this way, up to 64 at a time under load.
	accepts *groupcommit.Group[[]any, any]
	scripts functions
}

// acceptsWaiting bounds the Accepts waiting for a script run: past it (Redis is
// stalled) an Accept fails at once, which the ingress takes as best effort (the
// worker records the ticket).
const acceptsWaiting = 4096

// New returns a ledger over rdb.
func New(rdb redis.UniversalClient, cfg Config) *Ledger {
	cfg.setDefaults()
	l := &Ledger{rdb: rdb, cfg: cfg}
	l.accepts = &groupcommit.Group[[]any, any]{MaxPending: acceptsWaiting,
		Send: func(ctx context.Context, tickets [][]any) []groupcommit.Result[any] {
			answers, err := l.runEnqueue(ctx, true, tickets...)
			return groupcommit.All(len(tickets), answers, err)
		}}
	return l
}

// Config returns the ledger's effective configuration.
func (l *Ledger) Config() Config { return l.cfg }

func (l *Ledger) run(ctx context.Context, s *script, args ...any) *redis.Cmd {
	argv := append([]any{l.cfg.Retain.Milliseconds()}, args...)
	return l.scripts.run(ctx, l.rdb, s, []string{l.cfg.Prefix}, argv...)
}

// runEnqueue records tickets (each its enqueueArgs) in one enqueue.lua run and
// returns each one's answer, in order; with places, a new ticket's answer holds its
// place in line.
func (l *Ledger) runEnqueue(ctx context.Context, places bool, tickets ...[]any) ([]any, error) {
	args := append([]any{luaFlag(places)}, l.positionArgs()...)
	for _, t := range tickets {
		args = append(args, t...)
	}
	answers, err := l.run(ctx, enqueueScript, args...).Slice()
	if err == nil && len(answers) != len(tickets) {
		err = fmt.Errorf("enqueue answered for %d tickets, not %d", len(answers), len(tickets))
	}
	return answers, err
}

// Enqueue records a queued ticket. It is idempotent on the ticket id: the ingress calls
// it after the PubAck and every worker that receives the message calls it again, so the
// ticket exists even if the ingress died in between or Redis lost it. It reports whether
// this call created the ticket.
func (l *Ledger) Enqueue(ctx context.Context, t Ticket) (bool, error) {
	return l.enqueue(ctx, t, false)
}

// Accept records a ticket the ingress has just had stored in JetStream and returns it
// as its owner's poll would (Poll): a new ticket's place in line and wait estimate come
// from the same script run, so the answer costs one round trip. A ticket recorded
// before (a retried request, or a worker was first) is read back as Poll reads it.
// Concurrent Accepts share a script run (Ledger.accepts).
func (l *Ledger) Accept(ctx context.Context, t Ticket) (Position, error) {
	vals, err := l.accepts.Do(ctx, l.enqueueArgs(t, false), nil)
	if err != nil {
		return Position{}, unavailable("enqueue ticket "+t.ID, err)
	}
	if err, ok := vals.(error); ok { // this ticket's own failure (enqueue.lua)
		return Position{}, fmt.Errorf("enqueue ticket %s: %w", t.ID, err)
	}
	// A new ticket: { "created", position, eta ms, eta known, paused }; one recorded
	// before: the status it has.
	d := redisreply.New("enqueue")
	status, reply := d.Either(vals, 5, statusWords...)
	if err := d.Err(); err != nil {
		return Position{}, fmt.Errorf("enqueue ticket %s: %w", t.ID, err)
	}
	if status != "" {
		return l.Poll(ctx, t.ID)
	}
	reply.OneOf(0, "created")
	t.Created = t.Created.Truncate(time.Millisecond) // as the ledger keeps it
	p := Position{Ticket: t}
	readPlace(&p, reply)
	p.Status = StatusQueued
	if err := d.Err(); err != nil {
		return Position{}, fmt.Errorf("enqueue ticket %s: %w", t.ID, err)
	}
	return p, nil
}

// Restore records a ticket from its message after the ledger lost it (Redis wiped or
// restarted empty). The lost ledger may have ended it just before (its message is
// acknowledged only at the next sweep), so it is not admitted until its client shows
// it is still waiting: its next poll puts it back at its old place in line, and a
// stream on the link it holds re-registers it. Until then it holds nothing and is
// dropped as abandoned after AbandonAfter.
func (l *Ledger) Restore(ctx context.Context, t Ticket) (bool, error) {
	return l.enqueue(ctx, t, true)
}

func (l *Ledger) enqueue(ctx context.Context, t Ticket, restored bool) (bool, error) {
	created, err := l.enqueueAll(ctx, []Ticket{t}, restored)
	if err != nil {
		return false, fmt.Errorf("ticket %s: %w", t.ID, err)
	}
	return created[0], nil
}

// EnqueueAll records queued tickets as Enqueue records each, up to enqueueRun in one
// script run, and reports for each whether this call created it. When only some
// could not be recorded the error is a TicketErrors, by index; after any other
// error none may be taken as recorded (some may be).
func (l *Ledger) EnqueueAll(ctx context.Context, tickets []Ticket) ([]bool, error) {
	return l.enqueueAll(ctx, tickets, false)
}

// TicketErrors are the tickets of a call about many that failed, by their index in
// it; the others succeeded.
type TicketErrors map[int]error

func (e TicketErrors) Error() string {
	for i, err := range e {
		return fmt.Sprintf("%d of the tickets failed, the %dth: %v", len(e), i+1, err)
	}
	return "no ticket failed"
}

// RestoreAll restores tickets as Restore restores each, up to enqueueRun in one
// script run: the refill of a lost ledger.
func (l *Ledger) RestoreAll(ctx context.Context, tickets []Ticket) ([]bool, error) {
	return l.enqueueAll(ctx, tickets, true)
}

// enqueueRun bounds the tickets of one enqueue.lua run: Redis runs nothing else
// meanwhile.
const enqueueRun = 256

func (l *Ledger) enqueueAll(ctx context.Context, tickets []Ticket, restored bool) ([]bool, error) {
	created := make([]bool, 0, len(tickets))
	failed := TicketErrors{}
	for run := range slices.Chunk(tickets, enqueueRun) {
		args := make([][]any, len(run))
		for i, t := range run {
			args[i] = l.enqueueArgs(t, restored)
		}
		answers, err := l.runEnqueue(ctx, false, args...)
		if err != nil {
			return nil, unavailable("enqueue tickets", err)
		}
		// each "created", the status the ticket already has, or its own error
		d := redisreply.New("enqueue")
		for _, a := range answers {
			if err, ok := a.(error); ok {
				failed[len(created)] = err
				created = append(created, false)
				continue
			}
			created = append(created, d.OneOf(a, append([]string{"created"}, statusWords...)...) == "created")
		}
		if err := d.Err(); err != nil {
			return nil, fmt.Errorf("enqueue tickets: %w", err)
		}
	}
	if len(failed) > 0 {
		return created, failed
	}
	return created, nil
}

// enqueueArgs is t's part of enqueue.lua's ARGV (runEnqueue adds what is common to a
// run).
func (l *Ledger) enqueueArgs(t Ticket, restored bool) []any {
	return []any{t.ID, t.Object, t.ETag, t.Size, t.Tenant, t.Seq, t.Created.UnixMilli(), t.ContentType,
		t.TraceParent, t.Owner, luaFlag(restored)}
}

// positionArgs is what enqueue.lua (ARGV 3 to 7) and poll.lua (ARGV 4 to 8) need to
// count a ticket's place in line and estimate its wait.
func (l *Ledger) positionArgs() []any {
	return []any{minCompletions, l.cfg.GlobalLimit, l.cfg.TenantLimit, l.cfg.ExactTenants, l.cfg.OrderMaxAge.Milliseconds()}
}

// readPlace reads the place in line that enqueue.lua and poll.lua answer after their
// first element: { _, position, eta ms, eta known (1/0), paused (1/0) }.
func readPlace(p *Position, reply redisreply.Array) {
	p.Ahead = reply.Int(1)
	p.ETA, p.ETAKnown = time.Duration(reply.Int(2))*time.Millisecond, reply.Int(3) == 1
	p.Paused = reply.Int(4) == 1
}

func luaFlag(on bool) string {
	if on {
		return "1"
	}
	return "0"
}

// Grant is one admission: the ticket now holds a slot under Epoch and must be given its
// link (Ready) before the admit lease lapses. It carries what the link is made of, so
// the worker reads nothing back.
type Grant struct {
	// Ticket holds the fields of the ticket a link needs: ID, Tenant, Object, ETag,
	// Created and TraceParent.
	Ticket Ticket
	Epoch  int64 // the fencing epoch of this grant: the ledger accepts the link only under it
	// RateBps is the tenant's per-download bandwidth cap, 0 for none (TenantRate).
	RateBps int64
}

// grantFields is how many entries admit.lua returns per grant.
const grantFields = 8

// Admit admits up to max queued tickets under the limits, fairly across tenants. It
// answers ErrNoGeneration when the ledger was lost: Rebuild it, then admit again (a
// rebuilt ledger admits nothing for the rebuild's pause).
func (l *Ledger) Admit(ctx context.Context, max int) ([]Grant, error) {
	vals, err := l.run(ctx, admitScript, max, l.cfg.AdmitLease.Milliseconds(),
		l.cfg.AbandonAfter.Milliseconds(), l.cfg.GlobalLimit, l.cfg.TenantLimit).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("admit", err)
	}
	if len(vals) == 1 && vals[0] == "NOGEN" {
		return nil, ErrNoGeneration
	}
	return grantsFromReply(vals)
}

// grantsFromReply reads admit.lua's answer: grantFields entries per grant.
func grantsFromReply(vals []any) ([]Grant, error) {
	d := redisreply.New("admit")
	reply := d.Array(vals, 0)
	n := reply.Records(grantFields)
	grants := make([]Grant, 0, n)
	for r := range n {
		i := r * grantFields
		g := Grant{Epoch: reply.Int(i + 1)}
		g.Ticket = Ticket{ID: reply.String(i), Tenant: reply.String(i + 2), Object: reply.String(i + 3), ETag: reply.String(i + 4),
			TraceParent: reply.String(i + 6), Status: StatusAdmitting, Epoch: g.Epoch}
		if ms := reply.Int(i + 5); ms > 0 {
			g.Ticket.Created = time.UnixMilli(ms)
		}
		if rate := reply.String(i + 7); rate != "" {
			g.RateBps = reply.Int(i + 7)
		}
		grants = append(grants, g)
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	return grants, nil
}

// Stream is one streaming connection on a ticket's slot, as the edge knows it from the
// token and the object's Stat. The object's fields let a stream re-register after the
// ledger was lost (stream.lua).
type Stream struct {
	Ticket string
	Conn   string // the connection's name, unique per stream
	Epoch  int64
	Tenant string
	Object string
	ETag   string
	Size   int64
	// Offset is where the connection's first range starts: the bytes the client had
	// before it (a resume), counted as sent when the stream re-registers.
	Offset int64
	// Parts are the object's ranges the connection sends, in the order it sends them
	// (one for a plain or single-range response, several for multipart/byteranges).
	// The ledger marks what was sent of them as covered: a ticket is done once every
	// byte of the object was sent at least once. Empty: one range from Offset on.
	Parts []Span
}

// Span is Length bytes of the object from Start.
type Span struct{ Start, Length int64 }

// covered is what a connection that has sent total bytes of s's parts has sent, as
// stream.lua reads it: "start-end,..." (half-open).
func (s Stream) covered(total int64) string {
	parts := s.Parts
	if len(parts) == 0 {
		parts = []Span{{s.Offset, total}}
	}
	var b strings.Builder
	for _, p := range parts {
		if total <= 0 {
			break
		}
		n := min(p.Length, total)
		total -= n
		if n <= 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d-%d", p.Start, p.Start+n)
	}
	return b.String()
}

// partial is "1" when the connection asks for part of the object only.
func (s Stream) partial() string {
	whole := len(s.Parts) == 0 && s.Offset == 0 ||
		len(s.Parts) == 1 && s.Parts[0].Start == 0 && s.Parts[0].Length >= s.Size
	if whole {
		return "0"
	}
	return "1"
}

func (l *Ledger) stream(ctx context.Context, op string, s Stream, sent, total int64, d time.Duration) error {
	if s.Conn == "" {
		return fmt.Errorf("%s stream of ticket %s: no connection id", op, s.Ticket)
	}
	// A connection's lease is two thirds of the slot's (the edge renews both every
	// third): when an edge dies, its connections lapse while the slot is still held,
	// so a client that had every connection there can resume on another edge.
	res, err := l.run(ctx, streamScript, op, s.Ticket, s.Epoch, sent, d.Milliseconds(), l.cfg.MaxConns,
		s.Conn, (l.cfg.StreamLease * 2 / 3).Milliseconds(), s.Tenant, s.Object, s.ETag, s.Size, s.Offset+total,
		l.cfg.GlobalLimit, l.cfg.TenantLimit, s.covered(total), s.Offset, l.cfg.ResumeGrace.Milliseconds(), s.partial()).Result()
	if err != nil {
		return unavailable(op+" stream of ticket "+s.Ticket, err)
	}
	return slotAnswer("stream", op+" stream of ticket "+s.Ticket, res, "TOO_MANY")
}

// slotAnswer is what stream.lua's or check.lua's answer (script) means to the caller
// of what: "OK", "NOT_HELD", "NOGEN", or one of more words the script may also answer
// (stream.lua: "TOO_MANY"). Any other answer is a shape error, not a refusal.
func slotAnswer(script, what string, res any, more ...string) error {
	d := redisreply.New(script)
	switch d.OneOf(res, append([]string{"OK", "NOT_HELD", "NOGEN"}, more...)...) {
	case "OK":
		return nil
	case "NOT_HELD":
		return ErrSlotNotHeld
	case "TOO_MANY":
		return ErrTooManyConnections
	case "NOGEN":
		// Not a refusal: a worker rebuilds the ledger within its next admission round.
		return fmt.Errorf("%s: %w, being rebuilt", what, ErrNoGeneration)
	}
	return fmt.Errorf("%s: %w", what, d.Err())
}

// BeginStream opens the connection on the ticket's slot (see signer.SlotKeeper).
func (l *Ledger) BeginStream(ctx context.Context, s Stream) error {
	return l.stream(ctx, "begin", s, 0, 0, l.cfg.StreamLease)
}

// RenewStream records progress (sent since the last call, total on this connection)
// and extends the leases of the slot and the connection.
func (l *Ledger) RenewStream(ctx context.Context, s Stream, sent, total int64) error {
	return l.stream(ctx, "renew", s, sent, total, l.cfg.StreamLease)
}

// EndStream closes one connection; the last live one releases the slot.
func (l *Ledger) EndStream(ctx context.Context, s Stream, sent, total int64) error {
	return l.stream(ctx, "end", s, sent, total, l.cfg.ResumeGrace)
}

// CheckStream answers whether s's slot is still held under its epoch, changing
// nothing: nil, ErrSlotNotHeld (the ticket ended, its grant lapsed or was superseded),
// or an error wrapping ErrUnavailable or ErrNoGeneration. The edge asks it for HEAD,
// which takes no slot but must refuse an ended ticket's link as GET does.
func (l *Ledger) CheckStream(ctx context.Context, s Stream) error {
	res, err := l.run(ctx, checkScript, s.Ticket, s.Epoch).Result()
	if err != nil {
		return unavailable("check stream of ticket "+s.Ticket, err)
	}
	return slotAnswer("check", "check stream of ticket "+s.Ticket, res)
}

// Cancel cancels a ticket and frees its slot; it returns the status the ticket had.
func (l *Ledger) Cancel(ctx context.Context, id string) (Status, error) {
	res, err := l.run(ctx, cancelScript, id).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", unavailable("cancel ticket "+id, err)
	}
	d := redisreply.New("cancel")
	status := Status(d.OneOf(res, statusWords...))
	if err := d.Err(); err != nil {
		return "", fmt.Errorf("cancel ticket %s: %w", id, err)
	}
	return status, nil
}

// Get reads a ticket without counting as a poll.
func (l *Ledger) Get(ctx context.Context, id string) (Position, error) {
	return l.poll(ctx, id, false, "")
}

// Poll reads a ticket for its owner: it keeps a queued ticket from being dropped as
// abandoned and computes its position.
func (l *Ledger) Poll(ctx context.Context, id string) (Position, error) {
	return l.poll(ctx, id, true, AnyOwner)
}

// AnyOwner names every owner to PollAs: an operator's poll keeps any ticket alive.
const AnyOwner = "*"

// PollAs is Poll by a caller who may keep only owner's tickets alive (and those
// without an owner): for another's ticket it is Get. One round trip either way, so
// that an API poll need not read the ticket first to see whose it is. owner is a
// tenant, "" for an anonymous caller, or AnyOwner.
func (l *Ledger) PollAs(ctx context.Context, id, owner string) (Position, error) {
	return l.poll(ctx, id, true, owner)
}

func (l *Ledger) poll(ctx context.Context, id string, touch bool, owner string) (Position, error) {
	args := append([]any{id, luaFlag(touch)}, l.positionArgs()...)
	vals, err := l.run(ctx, pollScript, append(args, owner, l.cfg.AbandonAfter.Milliseconds())...).Slice()
	if errors.Is(err, redis.Nil) {
		return Position{}, ErrNotFound
	}
	if err != nil {
		return Position{}, unavailable("read ticket "+id, err)
	}
	// { fields, position, eta ms, eta known, paused }
	d := redisreply.New("poll")
	reply := d.Array(vals, 5)
	p := Position{Ticket: ticketFromHash(reply.Pairs(0))}
	readPlace(&p, reply)
	if err := d.Err(); err != nil {
		return Position{}, fmt.Errorf("read ticket %s: %w", id, err)
	}
	return p, nil
}

// Statuses reads the status of many tickets in one round trip; a missing ticket has
// the empty status.
func (l *Ledger) Statuses(ctx context.Context, ids []string) ([]Status, error) {
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, l.cfg.Prefix+"t:"+id, "status")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("read ticket statuses", err)
	}
	out := make([]Status, len(ids))
	for i, c := range cmds {
		out[i] = Status(c.Val())
	}
	return out, nil
}

// Ping checks that Redis answers.
func (l *Ledger) Ping(ctx context.Context) error { return l.rdb.Ping(ctx).Err() }
