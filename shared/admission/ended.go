package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A ticket is a record from its acceptance to --retain after it ended. While it is
// live its JetStream message is the record (the ledger entry is rebuilt from it); when
// it ends, the worker holding the message writes the final state into JetStream KV
// (Config.Ended, queue.EndedBucket, whose TTL is Retain) before it acknowledges the
// message, so an ended ticket still answers after Redis lost it.

type endedRecord struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	ETag      string `json:"etag,omitempty"`
	Size      int64  `json:"size"`
	Tenant    string `json:"tenant"`
	Owner     string `json:"owner,omitempty"`
	Status    Status `json:"status"`
	BytesSent int64  `json:"bytes_sent"`
	Covered   int64  `json:"bytes_covered,omitempty"`
	Error     string `json:"error,omitempty"`
	Created   int64  `json:"created_ms"`
	Ended     int64  `json:"ended_ms"`
}

func msOrZero(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// RecordEnded keeps the final state of a ticket that ended.
func (l *Ledger) RecordEnded(ctx context.Context, t Ticket) error {
	if l.cfg.Ended == nil {
		return errNoRecords
	}
	if !t.Status.Terminal() {
		return fmt.Errorf("record ended ticket %s: status %q has not ended", t.ID, t.Status)
	}
	data, err := json.Marshal(endedRecord{ID: t.ID, Object: t.Object, ETag: t.ETag, Size: t.Size, Tenant: t.Tenant, Owner: t.Owner,
		Status: t.Status, BytesSent: t.BytesSent, Covered: t.BytesCovered, Error: t.Error, Created: t.Created.UnixMilli(), Ended: t.Ended.UnixMilli()})
	if err != nil {
		return fmt.Errorf("encode ended ticket %s: %w", t.ID, err)
	}
	if _, err := l.cfg.Ended.Put(ctx, t.ID, data); err != nil {
		return recordsUnavailable("record ended ticket "+t.ID, err)
	}
	return nil
}

// Ended reads the record of a ticket that ended, or ErrNotFound.
func (l *Ledger) Ended(ctx context.Context, id string) (Ticket, error) {
	if l.cfg.Ended == nil {
		return Ticket{}, errNoRecords
	}
	e, err := l.cfg.Ended.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Ticket{}, ErrNotFound
	}
	if err != nil {
		return Ticket{}, recordsUnavailable("read ended ticket "+id, err)
	}
	var r endedRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Ticket{}, fmt.Errorf("ended ticket %s: unreadable record: %w", id, err)
	}
	return Ticket{ID: r.ID, Object: r.Object, ETag: r.ETag, Size: r.Size, Tenant: r.Tenant, Owner: r.Owner, Status: r.Status,
		BytesSent: r.BytesSent, BytesCovered: r.Covered, Error: r.Error, Created: msOrZero(r.Created), Ended: msOrZero(r.Ended)}, nil
}
