// Package signer runs the streaming edge that serves GET/HEAD /d/{token} from the
// object store.
//
// A token (shared/token) is stateless: verifying one needs only the keyring. What a
// token may do at a given moment (is its slot still held, how many connections are
// open on it) is kept in the admission ledger, reached through SlotKeeper.
package signer

import (
	"context"

	"github.com/sluice-dl/sluice/shared/admission"
)

// SlotKeeper is the part of the admission ledger the edge uses. Each method is
// fenced by (ticket, slot, epoch): a slot that lapsed or was granted again answers
// admission.ErrSlotNotHeld, and the edge must stop serving it.
//
// The edge tells the ledger's answers apart by one rule: admission.ErrSlotNotHeld or
// admission.ErrTooManyConnections (anywhere in the error's chain) is a definite answer,
// sent to the client as 410 or 429 (problemFor, the one place these become statuses)
// and, from RenewStream, ending the stream at once. Any other error means the ledger could not
// be asked: BeginStream answers 503 with Retry-After, and a running stream keeps going
// for EdgeConfig.RenewGrace before it stops.
//
// The sent arguments are deltas: the bytes sent since the previous call on the same
// stream, so that their sum over one stream is the bytes it sent.
//
// total is what the connection sent in all, so that a stream that re-registers after
// the ledger was lost brings its progress with it.
//
// admission.Stream.Conn names one streaming connection, unique per stream: the ledger
// leases each connection as it leases the slot, so the connections of an edge that
// died stop counting against the per-token cap when their lease lapses.
type SlotKeeper interface {
	// BeginStream opens the connection on the ticket's slot, moves the ticket to
	// streaming and extends the slot's lease. Past the per-token cap of live
	// connections it answers admission.ErrTooManyConnections.
	BeginStream(ctx context.Context, s admission.Stream) error
	// RenewStream adds sent bytes to the ticket's progress and extends the leases of
	// the slot and of the connection.
	RenewStream(ctx context.Context, s admission.Stream, sent, total int64) error
	// EndStream closes the connection, adding its last sent bytes. When no live
	// connection is left the ledger releases the slot (at once when the whole object
	// has been sent, after the resume grace otherwise).
	EndStream(ctx context.Context, s admission.Stream, sent, total int64) error
	// CheckStream answers whether the ticket's slot is still held under the stream's
	// epoch, changing nothing: HEAD takes no slot, but must refuse the link of an ended
	// ticket (admission.ErrSlotNotHeld) as GET does.
	CheckStream(ctx context.Context, s admission.Stream) error
}
