// Package workers runs sluice's JetStream consumers: admission of download tickets
// (this file) and, later, processing of release events.
package workers

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/shared/token"
)

// Backlog is every live ticket in the stream, for refilling a ledger that was lost
// (Each) and for restoring one lost ticket whose message this worker holds (Lookup).
type Backlog interface {
	Each(ctx context.Context, fn func(t queue.Ticket) error) error
	Lookup(ctx context.Context, id string) (queue.Ticket, error)
}

// TokenIssuer signs download tokens.
type TokenIssuer interface {
	Issue(c token.Claims) (string, error)
}

// AdmissionConfig configures an admission worker.
type AdmissionConfig struct {
	Consumer MessageSource
	// Acker settles held messages by their reply subjects, over the consumer's
	// connection.
	Acker         Settler
	Backlog       Backlog // the ticket stream; nil: a lost ledger is refilled as messages are redelivered
	Ledger        Ledger
	Tokens        TokenIssuer
	PublicEdgeURL string        // download links start with this
	Edges         EdgeChooser   // non-nil: the edge of each link is chosen per object (links.go)
	Direct        Presigner     // non-nil: links are presigned storage URLs (direct mode, links.go)
	TokenTTL      time.Duration // how long a link accepts new connections (2m)
	AdmitEvery    time.Duration // how often the worker admits without a wake-up (250ms): abandoned tickets are dropped then
	SweepEvery    time.Duration // how often the ledger's log of ended tickets is read and held messages kept alive (2s)
	// ReconcileEvery is how often every held ticket is checked against the ledger
	// all the same (5m): the log of ended tickets is what settles them, this catches
	// what it cannot tell (a ledger that lost a ticket).
	ReconcileEvery time.Duration
	AckWait        time.Duration // the consumer's AckWait, to pace in-progress signals
	Logger         *slog.Logger
	Now            func() time.Time
	// Tracer continues each ticket's trace (from its ledger entry) with an "admit"
	// span, whose context goes into the token for the edge; nil: none.
	Tracer trace.Tracer
	// OnAdmitted is told of each ticket whose link was published and how long it
	// waited since it was created (metrics, the fleet's figures); nil: nothing.
	OnAdmitted func(wait time.Duration)
}

// Admission consumes accepted tickets, keeps each one's message in progress while the
// ticket waits in the ledger (waiting never spends a delivery attempt), admits tickets
// into free slots, and acknowledges a message only once its ticket has ended.
type Admission struct {
	cfg AdmissionConfig
	log *slog.Logger

	mu sync.Mutex
	// held is every ticket message this worker holds, by ticket id: one per waiting
	// ticket, so each is kept small (a reply subject and two words).
	held map[string]heldMsg
	// unrecorded are the held tickets not yet in the ledger (it did not answer when
	// their message came): few, kept whole until the sweep records them.
	unrecorded map[string]queue.Ticket
	// restoring refills a rebuilt ledger from the stream, in the background.
	restoring sync.WaitGroup

	// The sweep's own (only the sweep goroutine uses them).
	cursor     string    // where the log of ended tickets was read up to; "" before the first sweep
	generation string    // the ledger's generation when the log was last read
	reconciled time.Time // when every held ticket was last checked against the ledger
}

type heldMsg struct {
	msg      queue.Held
	progress int64 // when the message was last delivered or renewed, Unix ms
	recorded bool  // the ledger has had the ticket (a ticket missing later was lost)
}

// NewAdmission returns an admission worker; Run starts it.
func NewAdmission(cfg AdmissionConfig) *Admission {
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 2 * time.Minute
	}
	if cfg.AdmitEvery == 0 {
		cfg.AdmitEvery = 250 * time.Millisecond
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = 2 * time.Second
	}
	if cfg.ReconcileEvery == 0 {
		cfg.ReconcileEvery = 5 * time.Minute
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.OnAdmitted == nil {
		cfg.OnAdmitted = func(time.Duration) {}
	}
	return &Admission{cfg: cfg, log: cfg.Logger.With("component", "admission"),
		held: map[string]heldMsg{}, unrecorded: map[string]queue.Ticket{}}
}

// Held returns how many ticket messages this worker holds.
func (a *Admission) Held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.held)
}

// Run consumes and admits until ctx ends, then stops fetching, hands every held message
// back to the stream for other workers, and returns.
func (a *Admission) Run(ctx context.Context) error {
	a.Prepare(ctx)
	in := newInbox(receiveAhead, a.cfg.Now)
	received := make(chan struct{})
	go func() {
		defer close(received)
		a.receiveAll(ctx, in)
	}()
	cc, err := consume(a.cfg.Consumer, in.put, receiveAhead, a.log)
	if err != nil {
		in.close()
		<-received
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.watchLimits(ctx) })
	// Admission is event-driven: the ledger signals a freed slot or a queued ticket,
	// and the periodic round only catches what a signal missed (pub/sub delivers at
	// most once, and nothing while Redis is away).
	wake := a.cfg.Ledger.Wakeups(ctx)
	wg.Go(func() { a.loop(ctx, a.cfg.AdmitEvery, wake, a.admit) })
	wg.Go(func() { a.loop(ctx, a.cfg.SweepEvery, nil, a.sweep) })
	<-ctx.Done()
	stopConsuming(cc)
	in.close() // what the drain handed over is handed back, and anything later
	<-received
	wg.Wait()
	a.restoring.Wait()
	a.handBack()
	return nil
}

// Prepare rebuilds a new or lost ledger at once. Called before the ingress of the same
// process takes its first ticket, a fresh start finds no ticket that could be live,
// and admits without a pause. Run calls it too.
func (a *Admission) Prepare(ctx context.Context) {
	if _, err := a.cfg.Ledger.Admit(ctx, 0); errors.Is(err, admission.ErrNoGeneration) {
		a.rebuild(ctx)
	}
}

// loop runs fn every period, and at once on each signal from wake (nil: none).
func (a *Admission) loop(ctx context.Context, every time.Duration, wake <-chan struct{}, fn func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-wake:
			if !ok {
				wake = nil // closed as ctx ends
				continue
			}
		case <-t.C:
		}
		started := time.Now()
		// A round that started finishes even if shutdown begins: a grant cut off
		// before its link is published would hold its ticket for an admit lease.
		round, cancel := context.WithTimeout(context.WithoutCancel(ctx), every+5*time.Second)
		fn(round)
		cancel()
		// Wake-ups that came during the round are one pending signal; spacing the
		// rounds they start keeps a flood of tickets from turning into a script call
		// per ticket, at a cost of at most wakeGap in latency.
		if wake != nil {
			select {
			case <-ctx.Done():
			case <-time.After(wakeGap - time.Since(started)):
			}
		}
	}
}

// wakeGap is the shortest time between the starts of two wake-driven admission rounds.
const wakeGap = 2 * time.Millisecond

// watchLimits keeps the ledger's copy of the limits equal to their record, watching
// again after a NATS outage ends the watch.
func (a *Admission) watchLimits(ctx context.Context) {
	for ctx.Err() == nil {
		if err := a.cfg.Ledger.WatchLimits(ctx); err != nil {
			a.log.Warn("watch limits; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

const (
	// receiveAhead is how many ticket messages the consumer pulls ahead of the
	// receiver, and the inbox between them holds.
	receiveAhead = 1000
	// receiveBatch is how many ticket messages receive takes in one round trip to the
	// ledger: those the consumer delivered while the previous group was received.
	receiveBatch = 256
)

// receiveAll receives the messages put in in, a group at a time, until it is closed.
// Once ctx ends it hands back what is left instead: holding it would only delay the
// hand-back of everything held.
func (a *Admission) receiveAll(ctx context.Context, in *inbox) {
	for {
		group, ok := in.take(receiveBatch)
		if !ok {
			return
		}
		if ctx.Err() != nil {
			for _, d := range group {
				_ = d.msg.Nak()
			}
			continue
		}
		a.receive(group)
	}
}

// receive takes a group of ticket messages: it asks the ledger after all of them in
// one round trip, enqueues (idempotent) those it lacks, and holds them.
func (a *Admission) receive(msgs []delivery) {
	type received struct {
		msg jetstream.Msg
		t   queue.Ticket
		h   heldMsg
	}
	group := make([]received, 0, len(msgs))
	ids := make([]string, 0, len(msgs))
	for _, d := range msgs {
		t, err := queue.Received(d.msg)
		if err != nil {
			a.log.Error("dropping a malformed ticket message", "subject", d.msg.Subject(), "err", err)
			_ = d.msg.Term()
			continue
		}
		group = append(group, received{d.msg, t, heldMsg{msg: queue.Hold(d.msg), progress: d.at.UnixMilli()}})
		ids = append(ids, t.ID)
	}
	if len(group) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := a.cfg.Ledger.Statuses(ctx, ids)
	var ended []string
	var missing []int // in kept: tickets the ledger lacks, to be enqueued together
	kept := group[:0]
	for i, r := range group {
		switch {
		case err != nil:
			// Unknown: hold it unrecorded; the sweep records it once the ledger answers.
		case st[i] != "":
			r.h.recorded = true // the ingress (or an earlier delivery) recorded it
			if st[i].Terminal() {
				// Ended before its message came (it may have been handed back): the
				// log of ended tickets is past it.
				ended = append(ended, r.t.ID)
			}
		default:
			gone, ferr := a.forgotten(ctx, r.t)
			switch {
			case ferr != nil:
			case gone:
				if err := r.msg.Ack(); err != nil {
					a.log.Warn("acknowledge an ended ticket's message", "ticket", r.t.ID, "err", err)
				}
				continue
			default:
				missing = append(missing, len(kept))
			}
		}
		kept = append(kept, r)
	}
	if len(missing) > 0 {
		tickets := make([]queue.Ticket, len(missing))
		for i, k := range missing {
			tickets[i] = kept[k].t
		}
		recorded := a.enqueueAll(ctx, tickets)
		for i, k := range missing {
			kept[k].h.recorded = recorded[i]
		}
	}
	a.mu.Lock()
	for _, r := range kept {
		a.held[r.t.ID] = r.h
		if !r.h.recorded {
			a.unrecorded[r.t.ID] = r.t
		}
	}
	a.mu.Unlock()
	a.settleEnded(ctx, ended)
}

// forgotten tells whether a ticket ended and its record expired (--retain) before this
// message reached the worker, as a worker that lags that far behind may find: the
// sweep's rule, applied before enqueue would bring the ticket back as queued. A ticket
// the ledger misses within --retain of its creation cannot have expired, so the ledger
// lost it and enqueue rebuilds it.
func (a *Admission) forgotten(ctx context.Context, t queue.Ticket) (bool, error) {
	if a.cfg.Now().Sub(t.Created) > a.cfg.Ledger.Config().Retain {
		return true, nil
	}
	// Ended and recorded, but its message came back before the acknowledgement
	// reached the stream (or after Redis lost the ledger): it must not wait again.
	_, err := a.cfg.Ledger.Ended(ctx, t.ID)
	if errors.Is(err, admission.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// enqueueAll records held tickets the ledger lacks, in as few round trips as it
// can, and reports which are.
func (a *Admission) enqueueAll(ctx context.Context, tickets []queue.Ticket) []bool {
	lt := make([]admission.Ticket, len(tickets))
	for i, t := range tickets {
		lt[i] = t.Ledger()
	}
	recorded := make([]bool, len(tickets))
	_, err := a.cfg.Ledger.EnqueueAll(ctx, lt)
	var some admission.TicketErrors
	switch {
	case err == nil:
	case errors.As(err, &some):
		for i, err := range some {
			a.log.Warn("enqueue ticket; will retry", "ticket", tickets[i].ID, "err", err)
		}
	default:
		a.log.Warn("enqueue tickets; will retry", "tickets", len(tickets), "first", tickets[0].ID, "err", err)
		return recorded
	}
	for i := range recorded {
		_, failed := some[i]
		recorded[i] = !failed
	}
	return recorded
}

// restore records a held ticket the ledger lost (Ledger.Restore).
func (a *Admission) restore(ctx context.Context, t queue.Ticket) {
	if _, err := a.cfg.Ledger.Restore(ctx, t.Ledger()); err != nil {
		a.log.Warn("restore ticket; will retry", "ticket", t.ID, "err", err)
	}
}

// admitBatch is how many tickets one admission round grants at most: each round is
// two Redis round trips (admit.lua, ready.lua) and the signing of its links.
const admitBatch = 128

// admit fills free slots and publishes the admitted tickets' links, a round of grants
// at a time. While a full round's links are signed and published, the next round is
// granted, so that Redis and the worker's CPU work side by side.
func (a *Admission) admit(ctx context.Context) {
	type round struct {
		grants []admission.Grant
		err    error
	}
	grant := func() round {
		g, err := a.cfg.Ledger.Admit(ctx, admitBatch)
		return round{g, err}
	}
	r := grant()
	for {
		if errors.Is(r.err, admission.ErrNoGeneration) {
			a.rebuild(ctx)
			return
		}
		if r.err != nil {
			if ctx.Err() == nil {
				a.log.Warn("admit", "err", r.err)
			}
			return
		}
		if len(r.grants) < admitBatch {
			a.issue(ctx, r.grants)
			return
		}
		next := make(chan round, 1)
		go func() { next <- grant() }()
		a.issue(ctx, r.grants)
		r = <-next
	}
}

// refillBatch is how many tickets a refill restores in one round trip.
const refillBatch = 256

// rebuild gives a lost ledger a new generation (limits from their record, epochs
// above every earlier one, a pause while live streams re-register) and refills it
// with every live ticket from the stream, at its old place in line, so that positions
// are right at once rather than when each message is redelivered.
func (a *Admission) rebuild(ctx context.Context) {
	rebuiltAt := a.cfg.Now()
	built, err := a.cfg.Ledger.Rebuild(ctx)
	if err != nil {
		a.log.Warn("rebuild the admission ledger; retrying", "err", err)
		return
	}
	if !built || a.cfg.Backlog == nil {
		return
	}
	a.log.Warn("the admission ledger was empty (new, or Redis lost it): rebuilt from JetStream; admission resumes once live streams had half a lease to re-register")
	a.restoring.Go(func() {
		start, n := a.cfg.Now(), 0
		rctx := context.WithoutCancel(ctx)
		var batch []admission.Ticket // restored together: one script run for up to refillBatch
		restore := func() error {
			if len(batch) == 0 {
				return nil
			}
			_, err := a.cfg.Ledger.RestoreAll(rctx, batch)
			n += len(batch)
			batch = batch[:0]
			if some := (admission.TicketErrors{}); errors.As(err, &some) {
				// those few are enqueued from their messages as they come
				a.log.Warn("restore tickets from the stream", "failed", len(some), "err", err)
				return nil
			}
			return err
		}
		err := a.cfg.Backlog.Each(rctx, func(t queue.Ticket) error {
			if t.Created.After(rebuiltAt) {
				// Accepted into the new ledger: its ingress (or the worker holding its
				// message) records it claimed; restored here, it would wait unclaimed.
				return nil
			}
			if ended, err := a.forgotten(rctx, t); ended || err != nil {
				return nil // ended (its holder acknowledges the message), or unknown: its holder decides
			}
			if batch = append(batch, t.Ledger()); len(batch) < refillBatch {
				return nil
			}
			return restore()
		})
		if err == nil {
			err = restore()
		}
		if err != nil {
			a.log.Warn("refill the ledger from the ticket stream; held messages are re-enqueued as they come", "restored", n, "err", err)
			return
		}
		a.log.Info("ledger refilled from the ticket stream", "tickets", n, "took", a.cfg.Now().Sub(start).Round(time.Millisecond))
	})
}

// issue signs the links of a round of grants and publishes them all in one call. A
// grant whose link is not published lapses after the admit lease and its ticket is
// admitted again.
func (a *Admission) issue(ctx context.Context, grants []admission.Grant) {
	if len(grants) == 0 {
		return
	}
	links := make([]admission.Link, 0, len(grants))
	traced := make([]context.Context, 0, len(grants)) // each link's span, for its log line
	spans := make([]trace.Span, 0, len(grants))
	defer func() {
		for _, s := range spans {
			s.End()
		}
	}()
	expires := a.cfg.Now().Add(a.cfg.TokenTTL)
	for _, g := range grants {
		t := g.Ticket
		tctx, span := a.cfg.Tracer.Start(telemetry.WithTraceParent(ctx, t.TraceParent), "admit",
			trace.WithAttributes(attribute.String("sluice.ticket", t.ID), attribute.String("sluice.tenant", t.Tenant)))
		spans = append(spans, span)
		link, err := a.link(tctx, g, expires)
		if err != nil {
			a.log.Error("make download link", "ticket", t.ID, "err", err)
			continue
		}
		links = append(links, admission.Link{Grant: g, URL: link, Expires: expires})
		traced = append(traced, tctx)
	}
	errs, err := a.cfg.Ledger.Ready(ctx, links)
	if err != nil {
		a.log.Warn("mark ticket ready", "tickets", len(links), "err", err)
		return
	}
	now := a.cfg.Now()
	for i, k := range links {
		t := k.Grant.Ticket
		if errors.Is(errs[i], admission.ErrFenced) {
			a.log.Warn("admission grant lapsed before the link was issued; the ticket was requeued", "ticket", t.ID, "epoch", k.Grant.Epoch)
			continue
		}
		waited := now.Sub(t.Created)
		a.cfg.OnAdmitted(waited)
		a.log.DebugContext(traced[i], "ticket ready", "ticket", t.ID, "tenant", t.Tenant, "epoch", k.Grant.Epoch, "waited", waited.Round(time.Millisecond))
	}
}

// endLogBatch is how many ended tickets one read of the ledger's log returns at most.
const endLogBatch = 2000

// sweep settles held messages and keeps the rest alive. What it asks of the ledger
// does not grow with the number of tickets held: it reads the log of tickets that
// ended since its last sweep (acknowledging those it holds), records the few tickets
// the ledger did not take when their message came, and renews the messages whose
// AckWait is a third gone. Every held ticket is checked against the ledger only every
// ReconcileEvery, when the log cannot tell (the ledger was rebuilt, the log trimmed
// past this worker's place), and at the first sweep.
func (a *Admission) sweep(ctx context.Context) {
	if a.cursor == "" {
		tail, gen, err := a.cfg.Ledger.EndLogTail(ctx)
		if err != nil {
			a.log.Warn("read the log of ended tickets; will retry", "err", err)
			a.renew()
			return
		}
		a.cursor, a.generation = tail, gen
		a.reconcile(ctx)
	}
	for {
		log, err := a.cfg.Ledger.EndedSince(ctx, a.cursor, endLogBatch)
		if err != nil {
			a.log.Warn("read the log of ended tickets; keeping messages in progress", "err", err)
			break
		}
		if log.Generation != a.generation {
			// Rebuilt: the log started over with the ledger, and tickets may be lost.
			a.generation, a.cursor = log.Generation, admission.EndLogStart
			a.reconcile(ctx)
			continue
		}
		a.cursor = log.Next
		a.settleEnded(ctx, a.holding(log.IDs))
		if log.Gap {
			a.reconcile(ctx)
		}
		if len(log.IDs) < endLogBatch {
			break
		}
	}
	if a.cfg.Now().Sub(a.reconciled) >= a.cfg.ReconcileEvery {
		a.reconcile(ctx)
	}
	a.record(ctx)
	a.renew()
}

// holding is those of ids whose message this worker holds.
func (a *Admission) holding(ids []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := ids[:0:0]
	for _, id := range ids {
		if _, ok := a.held[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

// settleEnded acknowledges the messages of held tickets that ended, once the final
// state of each is a record: the ticket keeps answering for --retain whatever
// happens to Redis.
func (a *Admission) settleEnded(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	ts, err := a.cfg.Ledger.Tickets(ctx, ids)
	if err != nil {
		a.log.Warn("read ended tickets; keeping their messages until the next reconciliation", "tickets", len(ids), "err", err)
		return
	}
	for i, t := range ts {
		switch {
		case t.ID == "" || !t.Status.Terminal():
			// Expired from the ledger already, or reopened (a resumed download): the
			// reconciliation decides.
		case a.cfg.Ledger.RecordEnded(ctx, t) != nil:
			a.log.Warn("record ended ticket; keeping its message until it can be", "ticket", ids[i])
		default:
			a.settle(ids[i], a.cfg.Acker.Ack)
		}
	}
}

// reconcile checks every held ticket against the ledger, in chunks: acknowledge those
// that ended, re-enqueue those the ledger lost.
func (a *Admission) reconcile(ctx context.Context) {
	a.reconciled = a.cfg.Now()
	a.mu.Lock()
	ids := make([]string, 0, len(a.held))
	for id, h := range a.held {
		if h.recorded {
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	const chunk = 1000
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		a.reconcileChunk(ctx, ids[:n])
		ids = ids[n:]
	}
}

func (a *Admission) reconcileChunk(ctx context.Context, ids []string) {
	statuses, err := a.cfg.Ledger.Statuses(ctx, ids)
	if err != nil {
		a.log.Warn("read ticket statuses; keeping messages in progress", "err", err)
		return
	}
	var ended []string
	for i, id := range ids {
		switch st := statuses[i]; {
		case st.Terminal():
			ended = append(ended, id)
		case st == "":
			a.lost(ctx, id)
		}
	}
	a.settleEnded(ctx, ended)
}

// lost restores a held ticket the ledger lost, from its message in the stream: back
// unclaimed, as the rebuild refills.
func (a *Admission) lost(ctx context.Context, id string) {
	if a.cfg.Backlog == nil {
		return // the message is handed back at shutdown and the next receipt records it
	}
	t, err := a.cfg.Backlog.Lookup(ctx, id)
	if errors.Is(err, queue.ErrNoTicket) {
		a.settle(id, func(queue.Held) error { return nil }) // acknowledged elsewhere: nothing left to hold
		return
	}
	if err != nil {
		a.log.Warn("read a lost ticket from the stream; will retry", "ticket", id, "err", err)
		return
	}
	switch ended, err := a.forgotten(ctx, t); {
	case err != nil:
		// Unknown (the records did not answer): ask again at the next reconciliation,
		// rather than bring back a ticket that may have ended.
	case ended:
		a.settle(id, a.cfg.Acker.Ack) // ended (recorded), or forgotten long ago
	default:
		a.restore(ctx, t)
	}
}

// record enqueues the held tickets the ledger did not take when their message came.
func (a *Admission) record(ctx context.Context) {
	a.mu.Lock()
	pending := make([]queue.Ticket, 0, len(a.unrecorded))
	for _, t := range a.unrecorded {
		pending = append(pending, t)
	}
	a.mu.Unlock()
	var done, waiting []queue.Ticket // settled as ended; to be enqueued together
	for _, t := range pending {
		ended, err := a.forgotten(ctx, t)
		switch {
		case err != nil:
		case ended:
			a.settle(t.ID, a.cfg.Acker.Ack)
			done = append(done, t)
		default:
			waiting = append(waiting, t)
		}
	}
	if len(waiting) > 0 {
		for i, ok := range a.enqueueAll(ctx, waiting) {
			if ok {
				done = append(done, waiting[i])
			}
		}
	}
	a.mu.Lock()
	for _, t := range done {
		delete(a.unrecorded, t.ID)
		if h, ok := a.held[t.ID]; ok {
			h.recorded = true
			a.held[t.ID] = h
		}
	}
	a.mu.Unlock()
}

// renew tells JetStream that the held messages whose AckWait is a third gone are
// still in progress. With a long AckWait (--ticket-ack-wait) that is few per sweep.
func (a *Admission) renew() {
	now := a.cfg.Now().UnixMilli()
	due := (a.cfg.AckWait / 3).Milliseconds()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, h := range a.held {
		if now-h.progress < due {
			continue
		}
		if err := a.cfg.Acker.InProgress(h.msg); err == nil {
			h.progress = now
			a.held[id] = h
		}
	}
}

// settle settles the message of ticket id with how, and stops holding it.
func (a *Admission) settle(id string, how func(queue.Held) error) {
	a.mu.Lock()
	h, ok := a.held[id]
	a.mu.Unlock()
	if !ok {
		return
	}
	if err := how(h.msg); err != nil {
		a.log.Warn("settle ticket message", "ticket", id, "err", err)
		return
	}
	a.mu.Lock()
	delete(a.held, id)
	delete(a.unrecorded, id)
	a.mu.Unlock()
}

// handBack returns every held message to the stream at once, so the remaining workers
// take over without waiting for AckWait.
func (a *Admission) handBack() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, h := range a.held {
		_ = a.cfg.Acker.Nak(h.msg)
		delete(a.held, id)
	}
	clear(a.unrecorded)
}
