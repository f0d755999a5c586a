package signer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
)

// errSlotLost: the ledger says the ticket no longer holds its slot; the stream stops.
var errSlotLost = errors.New("slot lost while streaming")

// slotHold keeps a ticket's slot for one streaming response. Its goroutine renews the
// lease every RenewEvery with the bytes sent since the last report; release stops it
// and ends the stream with the rest, so each BeginStream has exactly one EndStream and
// the bytes reported add up to the bytes sent.
//
// The ledger's answer decides what a failed renewal means. A definite refusal (an
// error with an HTTP status, such as admission.ErrSlotNotHeld) stops the stream at
// once: the slot may already be someone else's. Any other failure means the ledger
// could not be asked; the stream keeps going, as running downloads should through a
// short outage, until RenewGrace has passed since the last confirmed renewal.
type slotHold struct {
	e        *Edge
	claims   Claims
	ref      admission.Stream // the connection in the ledger (SlotKeeper)
	abort    func(error)
	progress // what the copy loop has sent and how long it waited on the client
	// reported is what the ledger has been told: the renewer's until it stops, then release's.
	reported int64
	stop     chan struct{}
	done     chan struct{}
}

// holdSlot starts renewing the slot BeginStream took. abort is called, once at most,
// when the stream must stop.
func (e *Edge) holdSlot(ctx context.Context, claims Claims, ref admission.Stream, abort func(error)) *slotHold {
	h := &slotHold{e: e, claims: claims, ref: ref, abort: abort, stop: make(chan struct{}), done: make(chan struct{})}
	go h.renew(ctx)
	return h
}

func (h *slotHold) renew(ctx context.Context) {
	defer close(h.done)
	tick := time.NewTicker(h.e.renewEvery)
	defer tick.Stop()
	// The minimum-rate rule (pace.go) is checked on its own, faster tick.
	var watchC <-chan time.Time
	var watch *rateWatch
	if h.e.minRate > 0 {
		watch = &rateWatch{minRate: float64(h.e.minRate), window: h.e.minRateWindow}
		wt := time.NewTicker(max(h.e.minRateWindow/10, 10*time.Millisecond))
		defer wt.Stop()
		watchC = wt.C
		_ = watch.sample(h.e.now(), &h.progress)
	}
	lastOK := h.e.now()
	for {
		select {
		case <-h.stop:
			return
		case <-ctx.Done():
			return
		case <-watchC:
			if err := watch.sample(h.e.now(), &h.progress); err != nil {
				h.abort(err)
				return
			}
			continue
		case <-tick.C:
		}
		sent := h.sent.Load()
		// Not canceled with the stream: a renewal cut halfway leaves the ledger's count
		// unknown, and the bytes would be reported twice.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.e.renewEvery)
		err := h.e.slots.RenewStream(rctx, h.ref, sent-h.reported, sent)
		cancel()
		if err == nil {
			h.reported, lastOK = sent, h.e.now()
			continue
		}
		if refused(err) {
			h.abort(fmt.Errorf("%w: %w", errSlotLost, err))
			return
		}
		if down := h.e.now().Sub(lastOK); down >= h.e.renewGrace {
			h.abort(fmt.Errorf("renew stream: %w for %s: %w", errLedgerUnavailable, down.Round(time.Millisecond), err))
			return
		}
		h.e.log.Warn("renew stream failed, still streaming", "ticket", h.claims.Ticket, "err", err)
	}
}

// release stops renewing and ends the stream, reporting the bytes not yet reported.
// It returns the bytes sent in all.
func (h *slotHold) release(ctx context.Context) int64 {
	close(h.stop)
	<-h.done
	sent := h.sent.Load()
	err := h.end(ctx, sent)
	if refused(err) {
		// The slot lapsed or was taken back: nothing is left to release.
		h.e.log.Debug("end stream refused", "ticket", h.claims.Ticket, "sent", sent, "err", err)
	} else if err != nil {
		h.e.log.Warn("end stream failed", "ticket", h.claims.Ticket, "sent", sent, "err", err)
	}
	return sent
}

// end reports the stream's end to the ledger. An end that is lost leaves a ticket
// whose bytes were all sent looking live: after the ledger was wiped, the workers
// refill it from its message and admit it again behind a link nobody holds, which
// keeps a slot for the whole token TTL. So when the call surely did not run (the
// ledger has no generation yet, or Redis refused the connection) it is made again,
// until RenewGrace has passed. A call that may have run (a timeout, a connection
// cut) is not repeated: its bytes would be counted twice.
func (h *slotHold) end(ctx context.Context, sent int64) error {
	deadline := h.e.now().Add(h.e.renewGrace)
	wait := 20 * time.Millisecond
	for {
		cctx, cancel := cleanupContext(ctx)
		err := h.e.slots.EndStream(cctx, h.ref, sent-h.reported, sent)
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
