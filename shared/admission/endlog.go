package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// The ledger's scripts log every ticket that ends (prelude.lua finish: the endlog
// stream, its last 20,000 entries or so). A worker holding ticket messages reads the
// log from where it left off rather than asking after every ticket it holds: waiting
// tickets cost nothing per sweep, whatever their number.

// EndLog is what EndedSince read.
type EndLog struct {
	// IDs are the tickets that ended after the cursor, oldest first.
	IDs []string
	// Next is the cursor to read from next time.
	Next string
	// Gap: entries after the cursor were trimmed before they were read (the reader
	// fell that far behind): ask after every held ticket instead.
	Gap bool
	// Generation is the ledger's generation id ("" when it has none): a change means
	// the ledger was lost and rebuilt, and the log with it.
	Generation string
}

// EndLogStart is the cursor that reads the log from its start.
const EndLogStart = "0-0"

// EndedSince reads up to max tickets that ended after cursor (EndLogStart, or a
// former EndLog.Next), in one round trip.
func (l *Ledger) EndedSince(ctx context.Context, cursor string, max int) (EndLog, error) {
	at, err := parseCursor(cursor)
	if err != nil {
		return EndLog{}, err
	}
	key := l.cfg.Prefix + "endlog"
	pipe := l.rdb.Pipeline()
	first := pipe.XRangeN(ctx, key, "-", "+", 1)
	read := pipe.XRangeN(ctx, key, "("+cursor, "+", int64(max))
	gen := pipe.HGet(ctx, l.cfg.Prefix+"gen", "id")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return EndLog{}, unavailable("read the ended tickets' log", err)
	}
	d := redisreply.New("ended tickets' log")
	out := EndLog{Next: cursor, Generation: gen.Val()}
	if f := first.Val(); len(f) > 0 && cursor != EndLogStart && at.before(oldestID(d, f[0].ID)) {
		// What followed the cursor is gone (or the log is new): the cursor's own entry
		// would still be there otherwise.
		out.Gap = true
	}
	for _, m := range read.Val() {
		out.Next = m.ID
		e := redisreply.New("ended tickets' log")
		id := e.Entry(m.ID, m.Values).Required("id")
		if err := e.Err(); err != nil {
			// Read past it, as a gap: the reader then checks every ticket it holds,
			// which settles whatever this entry was meant to name. Stopping here would
			// leave the log unread for good.
			l.cfg.Logger.Warn("an entry of the ended tickets' log has no ticket id; read past it as a gap", "err", err)
			out.Gap = true
			continue
		}
		out.IDs = append(out.IDs, id)
	}
	if err := d.Err(); err != nil {
		return EndLog{}, fmt.Errorf("read the ended tickets' log: %w", err)
	}
	return out, nil
}

// EndLogTail is the cursor at the log's current end, with the ledger's generation:
// where a reader that has just looked at every ticket it holds starts from.
func (l *Ledger) EndLogTail(ctx context.Context) (cursor, generation string, err error) {
	pipe := l.rdb.Pipeline()
	last := pipe.XRevRangeN(ctx, l.cfg.Prefix+"endlog", "+", "-", 1)
	gen := pipe.HGet(ctx, l.cfg.Prefix+"gen", "id")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", "", unavailable("read the ended tickets' log", err)
	}
	if l := last.Val(); len(l) > 0 {
		return l[0].ID, gen.Val(), nil
	}
	return EndLogStart, gen.Val(), nil
}

// streamID is a Redis stream entry id, "ms-seq".
type streamID struct{ ms, seq uint64 }

func (a streamID) before(b streamID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

// oldestID reads the id of the log's first entry.
func oldestID(d *redisreply.Decoder, id string) streamID {
	ms, seq := d.StreamID(id)
	return streamID{ms, seq}
}

// parseCursor reads an EndLog cursor: a stream id the log answered, or EndLogStart.
func parseCursor(cursor string) (streamID, error) {
	ms, seq, err := redisreply.ParseStreamID(cursor)
	if err != nil {
		return streamID{}, fmt.Errorf("read the ended tickets' log after %q: not a cursor EndedSince or EndLogTail answered: %w", cursor, err)
	}
	return streamID{ms, seq}, nil
}

// Tickets reads many tickets as the ledger holds them, in one round trip, without
// counting as polls; a missing ticket is the zero Ticket (empty ID).
func (l *Ledger) Tickets(ctx context.Context, ids []string) ([]Ticket, error) {
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, l.cfg.Prefix+"t:"+id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("read tickets", err)
	}
	out := make([]Ticket, len(ids))
	for i, c := range cmds {
		if len(c.Val()) == 0 {
			continue
		}
		d := redisreply.New("ticket " + ids[i])
		out[i] = ticketFromHash(d.Hash(c.Val()))
		if err := d.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
