package signer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/token"
)

// errSlotLost: the ledger says the ticket no longer holds its slot; the stream stops.
var errSlotLost = errors.New("slot lost while streaming")

// Ledger bookkeeping is per client connection, not per request.
//
// A download manager asks for many ranges over a few keep-alive connections. The first
// response for a token on a TCP connection opens a slotHold (BeginStream: one
// connection in the ledger, counted against the per-token cap); the later responses on
// that connection for the same ticket and epoch reuse it, while the token is still
// verified on every request. The hold's goroutine renews the slot and the connection
// every RenewEvery, reporting the bytes sent and the ranges covered since it opened;
// it ends (EndStream, with the rest) when
//
//   - a response completes this connection's coverage of the whole object, so a plain
//     download ends its ticket done the moment its last byte went out;
//   - no response has used it for HoldIdle (a keep-alive connection that went quiet);
//   - the client connection closes (ConnState), or the edge shuts down (Close).
//
// Each BeginStream has exactly one EndStream, and the bytes and ranges reported are
// those the responses sent: the ledger's coverage-based done counts every range. A
// hold the ledger refused (or could not be reached for RenewGrace) aborts its responses
// and is not reused: the next request begins again and gets the ledger's answer.

// connKey is the context key of a client connection's holds (ConnContext).
type connKey struct{}

// connHolds are the holds of one client connection.
type connHolds struct {
	nc    net.Conn
	mu    sync.Mutex
	holds map[holdKey]*slotHold
	// chunk is the write size its last response's pacing reached (0: none yet): the
	// next response on the connection starts from it rather than from minChunk, so a
	// fast client's small ranges go out in one write each.
	chunk atomic.Int64
	// verified is the last token verified on the connection (Edge.verify).
	verified atomic.Pointer[verifiedToken]
}

type verifiedToken struct {
	token  string
	claims token.Claims
}

type holdKey struct {
	ticket string
	epoch  int64
}

// maxSpans bounds the ranges one hold remembers as sent; the ledger keeps at most 64
// intervals per ticket anyway (stream.lua). A range past it is left out of the report,
// so the ticket is never marked done on bytes it was not sent.
const maxSpans = 256

// slotHold keeps a ticket's slot for one client connection.
//
// The ledger's answer decides what a failed renewal means. A definite refusal (such as
// admission.ErrSlotNotHeld) stops the hold's responses at once: the slot may already
// be someone else's. Any other failure means the ledger could not be asked; responses
// keep going, as running downloads should through a short outage, until RenewGrace
// has passed since the last confirmed renewal.
type slotHold struct {
	e    *Edge
	conn *connHolds // nil: the hold ends with its response
	key  holdKey
	ref  admission.Stream // the connection in the ledger, as begun

	mu        sync.Mutex
	active    map[*response]struct{}
	covered   []admission.Span // what finished responses sent, sorted and disjoint
	sent      int64            // bytes finished responses sent
	lost      bool             // refused or unreachable: not to be reused
	released  bool
	lingering bool
	idle      *time.Timer
	reported  int64 // bytes the ledger has been told of (the renewer's, then release's)
	// file is the object's local file, kept open between the connection's responses
	// (files.go); fileBusy while a response reads it.
	file     *os.File
	fileBusy bool

	stop chan struct{}
	done chan struct{}
}

// response is one response streaming on a hold.
type response struct {
	progress // what the copy loop has sent and how long it waited on the client
	parts    []admission.Span
	abort    func(error)
	watch    *rateWatch // nil without a minimum rate
}

// ConnContext is for the edge's http.Server (ConnContext): it tunes every accepted TCP
// connection for streaming (see notSentLowat) and gives it the place its ledger holds
// are kept between requests.
func (e *Edge) ConnContext(ctx context.Context, c net.Conn) context.Context {
	tuneConn(e, c)
	return context.WithValue(ctx, connKey{}, &connHolds{nc: c, holds: make(map[holdKey]*slotHold)})
}

// ConnState is for the edge's http.Server (ConnState): a client connection that
// closes ends its holds at once, rather than after HoldIdle.
func (e *Edge) ConnState(c net.Conn, s http.ConnState) {
	if s != http.StateClosed && s != http.StateHijacked {
		return
	}
	e.holdsMu.Lock()
	conn := e.conns[c]
	e.holdsMu.Unlock()
	if conn == nil {
		return
	}
	conn.mu.Lock()
	holds := slices.Collect(mapValues(conn.holds))
	conn.mu.Unlock()
	for _, h := range holds {
		h.release(context.Background())
	}
}

// Close ends every hold, reporting what was sent on it; it is for the edge's shutdown,
// after its http.Server stopped, so that no idle keep-alive connection is left counted
// in the ledger. It returns when the ledger was told or ctx ended.
func (e *Edge) Close(ctx context.Context) {
	e.holdsMu.Lock()
	holds := make([]*slotHold, 0, len(e.holds))
	for h := range e.holds {
		holds = append(holds, h)
	}
	e.holdsMu.Unlock()
	var wg sync.WaitGroup
	for _, h := range holds {
		wg.Go(func() { h.release(ctx) })
	}
	wg.Wait()
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// acquire returns the hold of ref's ticket on the request's connection, opening one
// in the ledger (BeginStream) when the connection has none that may be reused.
func (e *Edge) acquire(ctx context.Context, ref admission.Stream) (*slotHold, error) {
	key := holdKey{ref.Ticket, ref.Epoch}
	conn, _ := ctx.Value(connKey{}).(*connHolds)
	if conn != nil && e.holdIdle > 0 {
		// Held across BeginStream: only this connection's requests wait on it.
		conn.mu.Lock()
		defer conn.mu.Unlock()
		if h := conn.holds[key]; h != nil && h.reuse() {
			return h, nil
		}
	} else {
		conn = nil
	}
	ref.Conn = rand.Text()
	if err := e.slots.BeginStream(ctx, ref); err != nil {
		return nil, err
	}
	h := &slotHold{e: e, conn: conn, key: key, ref: ref, active: make(map[*response]struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	e.holdsMu.Lock()
	e.holds[h] = struct{}{}
	if conn != nil {
		conn.holds[key] = h
		e.conns[conn.nc] = conn
	}
	e.holdsMu.Unlock()
	go h.renew(context.WithoutCancel(ctx))
	return h, nil
}

// reuse reports whether a later response may stream on h; it stops h's idle timer.
// It runs under the connection's lock.
func (h *slotHold) reuse() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost || h.released {
		return false
	}
	if h.lingering {
		if !h.idle.Stop() {
			return false // it fired: the hold is being released
		}
		h.lingering = false
	}
	return true
}

// start registers a response sending parts on h; abort is called, once at most, when
// it must stop.
func (h *slotHold) start(parts []admission.Span, abort func(error)) *response {
	r := &response{parts: parts, abort: abort}
	if h.e.minRate > 0 {
		r.watch = &rateWatch{minRate: float64(h.e.minRate), window: h.e.minRateWindow}
		_ = r.watch.sample(h.e.now(), &r.progress)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost {
		// Refused between acquire and now: the response must not start.
		abort(errSlotLost)
	}
	h.active[r] = struct{}{}
	return r
}

// finish records what r sent; when no response is left on h it ends h at once (the
// connection has covered the whole object, or h cannot be reused) or after HoldIdle.
// It returns the bytes r sent.
func (h *slotHold) finish(r *response) int64 {
	sent := r.sent.Load()
	h.mu.Lock()
	delete(h.active, r)
	h.sent += sent
	h.covered = addSpans(h.covered, r.parts, sent)
	endNow := h.lost || h.conn == nil || covers(h.covered, h.ref.Size)
	idle := len(h.active) == 0 && !h.released
	if idle && !endNow {
		h.lingering = true
		if h.idle == nil {
			h.idle = time.AfterFunc(h.e.holdIdle, func() { h.release(context.Background()) })
		} else {
			h.idle.Reset(h.e.holdIdle)
		}
	}
	h.mu.Unlock()
	if idle && endNow {
		h.release(context.Background())
	}
	return sent
}

// report is what h has sent so far: the stream to report (its parts the ranges
// covered), the bytes sent in all, and the covered length (the report's total).
func (h *slotHold) report() (admission.Stream, int64, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	spans, sent := h.covered, h.sent
	for r := range h.active {
		n := r.sent.Load()
		sent += n
		spans = addSpans(slices.Clone(spans), r.parts, n)
	}
	ref := h.ref
	ref.Parts = spans
	var total int64
	for _, s := range spans {
		total += s.Length
	}
	return ref, sent, total
}

// fail marks h lost and aborts its responses; an idle h is released.
func (h *slotHold) fail(err error) {
	h.mu.Lock()
	h.lost = true
	for r := range h.active {
		r.abort(err)
	}
	idle := len(h.active) == 0 && !h.released
	if h.lingering && h.idle.Stop() {
		h.lingering = false
	} else if h.lingering {
		idle = false // its timer releases it
	}
	h.mu.Unlock()
	if idle {
		go h.release(context.Background())
	}
}

func (h *slotHold) renew(ctx context.Context) {
	defer close(h.done)
	tick := time.NewTicker(h.e.renewEvery)
	defer tick.Stop()
	// The minimum-rate rule (pace.go) is checked on its own, faster tick.
	var watchC <-chan time.Time
	if h.e.minRate > 0 {
		wt := time.NewTicker(max(h.e.minRateWindow/10, 10*time.Millisecond))
		defer wt.Stop()
		watchC = wt.C
	}
	lastOK := h.e.now()
	for {
		select {
		case <-h.stop:
			return
		case <-watchC:
			h.watchRates()
			continue
		case <-tick.C:
		}
		ref, sent, total := h.report()
		// Not canceled with the stream: a renewal cut halfway leaves the ledger's count
		// unknown, and the bytes would be reported twice.
		rctx, cancel := context.WithTimeout(ctx, h.e.renewEvery)
		err := h.e.slots.RenewStream(rctx, ref, sent-h.reported, total)
		cancel()
		if err == nil {
			h.reported, lastOK = sent, h.e.now()
			continue
		}
		if refused(err) {
			h.fail(fmt.Errorf("%w: %w", errSlotLost, err))
			return
		}
		if down := h.e.now().Sub(lastOK); down >= h.e.renewGrace {
			h.fail(fmt.Errorf("renew stream: %w for %s: %w", errLedgerUnavailable, down.Round(time.Millisecond), err))
			return
		}
		h.e.log.Warn("renew stream failed, still streaming", "ticket", h.ref.Ticket, "err", err)
	}
}

// watchRates applies the minimum-rate rule to each response streaming on h.
func (h *slotHold) watchRates() {
	now := h.e.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for r := range h.active {
		if err := r.watch.sample(now, &r.progress); err != nil {
			r.abort(err)
		}
	}
}

// release stops renewing and ends the hold's connection in the ledger, reporting the
// bytes and ranges not yet reported. It runs once; later calls return at once.
func (h *slotHold) release(ctx context.Context) {
	if c := h.conn; c != nil {
		c.mu.Lock()
		if c.holds[h.key] == h {
			delete(c.holds, h.key)
		}
		empty := len(c.holds) == 0
		c.mu.Unlock()
		if empty {
			h.e.holdsMu.Lock()
			if h.e.conns[c.nc] == c {
				delete(h.e.conns, c.nc)
			}
			h.e.holdsMu.Unlock()
		}
	}
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	if h.lingering {
		h.idle.Stop()
		h.lingering = false
	}
	for r := range h.active {
		r.abort(errEdgeClosing) // only Close ends a hold with responses still on it
	}
	if h.file != nil && !h.fileBusy {
		h.file.Close()
		h.file = nil
	}
	h.mu.Unlock()
	h.e.holdsMu.Lock()
	delete(h.e.holds, h)
	h.e.holdsMu.Unlock()
	close(h.stop)
	<-h.done
	ref, sent, total := h.report()
	err := h.end(ctx, ref, sent, total)
	if refused(err) {
		// The slot lapsed or was taken back: nothing is left to release.
		h.e.log.Debug("end stream refused", "ticket", h.ref.Ticket, "sent", sent, "err", err)
	} else if err != nil {
		h.e.log.Warn("end stream failed", "ticket", h.ref.Ticket, "sent", sent, "err", err)
	}
}

// errEdgeClosing: the edge is shutting down.
var errEdgeClosing = errors.New("edge shutting down")

// end reports the hold's end to the ledger. An end that is lost leaves a ticket whose
// bytes were all sent looking live: after the ledger was wiped, the workers refill it
// from its message and admit it again behind a link nobody holds, which keeps a slot
// for the whole token TTL. So when the call surely did not run (the ledger has no
// generation yet, or Redis refused the connection) it is made again, until RenewGrace
// has passed. A call that may have run (a timeout, a connection cut) is not repeated:
// its bytes would be counted twice.
func (h *slotHold) end(ctx context.Context, ref admission.Stream, sent, total int64) error {
	deadline := h.e.now().Add(h.e.renewGrace)
	wait := 20 * time.Millisecond
	for {
		cctx, cancel := cleanupContext(ctx)
		err := h.e.slots.EndStream(cctx, ref, sent-h.reported, total)
		cancel()
		if err == nil || !notRun(err) || h.e.now().Add(wait).After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// notRun tells the ledger's failures that surely changed nothing: it answered that it
// has no generation, or the connection to Redis could not be made.
func notRun(err error) bool {
	if errors.Is(err, admission.ErrNoGeneration) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// addSpans returns spans with the first sent bytes of parts added, merged so that
// spans stay sorted, disjoint and non-touching (as stream.lua keeps the ticket's).
func addSpans(spans []admission.Span, parts []admission.Span, sent int64) []admission.Span {
	for _, p := range parts {
		if sent <= 0 {
			break
		}
		n := min(p.Length, sent)
		sent -= n
		if n > 0 {
			spans = addSpan(spans, p.Start, p.Start+n)
		}
	}
	return spans
}

func addSpan(spans []admission.Span, a, b int64) []admission.Span {
	out := make([]admission.Span, 0, len(spans)+1)
	placed := false
	for _, s := range spans {
		end := s.Start + s.Length
		switch {
		case end < a:
			out = append(out, s)
		case s.Start > b:
			if !placed {
				out, placed = append(out, admission.Span{Start: a, Length: b - a}), true
			}
			out = append(out, s)
		default: // overlapping or touching: one span
			a, b = min(a, s.Start), max(b, end)
		}
	}
	if !placed {
		out = append(out, admission.Span{Start: a, Length: b - a})
	}
	if len(out) > maxSpans {
		return spans
	}
	return out
}

// covers reports whether spans cover all size bytes of the object.
func covers(spans []admission.Span, size int64) bool {
	return size <= 0 || len(spans) == 1 && spans[0].Start == 0 && spans[0].Length >= size
}
