package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// record is an entry as it is stored in EntryBucket. Event is the identity of the
// event that wrote it: a redelivery of that event after a crash between writing the
// entry and its outcome finds its own write and only completes it.
type record struct {
	Object      string `json:"object"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	ETag        string `json:"etag"`
	ContentType string `json:"content_type"`
	PublishedUS int64  `json:"published_us"` // orders versions of an object and a channel's releases
	Channel     string `json:"channel"`
	State       string `json:"state"`
	Reason      string `json:"reason"`
	Event       string `json:"event"`
}

func (r record) entry() Entry {
	return Entry{Object: r.Object, Size: r.Size, SHA256: r.SHA256, ETag: r.ETag, ContentType: r.ContentType,
		PublishedAt: time.UnixMicro(r.PublishedUS).UTC(), Channel: r.Channel, State: r.State, Reason: r.Reason}
}

// processedEvent is the value of an event identity in EventBucket.
type processedEvent struct {
	Identity string `json:"identity"`
	Object   string `json:"object"`
	Outcome  string `json:"outcome"`
}

// entryKey is an object key as a bucket key: KV keys allow only [-/_=.a-zA-Z0-9] and
// no empty dot-separated token, and base64url (unpadded) is within that.
func entryKey(object string) string { return base64.RawURLEncoding.EncodeToString([]byte(object)) }

// objectOfKey is entryKey's inverse.
func objectOfKey(key string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("catalog entry key %q is not base64url: %w", key, err)
	}
	return string(b), nil
}

// eventKey is an event identity as a bucket key: fixed length whatever the identity.
func eventKey(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:])
}

// Record stores a processed event's result, exactly once per event identity. It
// returns the outcome and whether this call recorded it (false: the event had been
// recorded before, and nothing changed).
//
// The entry is written first (compare-and-set on the key's revision, so parallel
// workers never lose an update and an older event never replaces a newer entry), then
// the derived state in Redis (channel aliases), then the event's outcome. A failure
// anywhere leaves the event unrecorded, and its redelivery completes what was begun.
func (c *Catalog) Record(ctx context.Context, r Result) (outcome string, recorded bool, err error) {
	if prev, err := c.Processed(ctx, r.Identity); err != nil {
		return "", false, err
	} else if prev != "" {
		c.countDuplicate(ctx)
		return prev, false, nil
	}
	outcome, written, rev, err := c.writeEntry(ctx, r)
	if err != nil {
		return "", false, err
	}
	if err := c.applyDerived(ctx, rev, written); err != nil {
		return "", false, err
	}
	value, _ := json.Marshal(processedEvent{Identity: r.Identity, Object: r.Object, Outcome: outcome})
	_, err = c.events.Create(ctx, eventKey(r.Identity), value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// The same event, recorded at this moment by another worker.
		prev, perr := c.Processed(ctx, r.Identity)
		if perr != nil {
			return "", false, perr
		}
		c.countDuplicate(ctx)
		return prev, false, nil
	}
	if err != nil {
		return "", false, natsDown("record event "+r.Identity, err)
	}
	c.countRecorded(ctx, outcome)
	return outcome, true, nil
}

// writeEntry writes the result as the object's entry unless a newer event's entry is
// there (superseded), retrying when another worker wrote the key in between. It
// returns the entry now stored and its revision (for superseded: the newer one's).
func (c *Catalog) writeEntry(ctx context.Context, r Result) (outcome string, stored record, rev uint64, err error) {
	key := entryKey(r.Object)
	next := record{Object: r.Object, Size: r.Size, SHA256: r.SHA256, ETag: r.ETag, ContentType: r.ContentType,
		PublishedUS: r.PublishedAt.UnixMicro(), Channel: r.Channel, State: r.State, Reason: r.Reason, Event: r.Identity}
	value, err := json.Marshal(next)
	if err != nil {
		return "", record{}, 0, fmt.Errorf("encode entry of %q: %w", r.Object, err)
	}
	for attempt := 1; ; attempt++ {
		cur, curRev, found, err := c.readEntry(ctx, r.Object)
		if err != nil {
			return "", record{}, 0, err
		}
		switch {
		case found && cur.Event == r.Identity:
			// Written by this event before a crash (or by a twin delivery right now).
			return cur.State, cur, curRev, nil
		case found && next.PublishedUS < cur.PublishedUS:
			return OutcomeSuperseded, cur, curRev, nil
		}
		if found {
			rev, err = c.entries.Update(ctx, key, value, curRev)
		} else {
			rev, err = c.entries.Create(ctx, key, value)
		}
		if err == nil {
			return next.State, next, rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return "", record{}, 0, natsDown(fmt.Sprintf("write catalog entry %q", r.Object), err)
		}
		// Another event for the object was written in between: look again.
		if attempt >= 1000 {
			return "", record{}, 0, fmt.Errorf("write catalog entry %q: still contended after %d attempts", r.Object, attempt)
		}
	}
}

// readEntry returns the stored entry of an object and its revision.
func (c *Catalog) readEntry(ctx context.Context, object string) (record, uint64, bool, error) {
	kve, err := c.entries.Get(ctx, entryKey(object))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, false, nil
	}
	if err != nil {
		return record{}, 0, false, natsDown(fmt.Sprintf("read catalog entry %q", object), err)
	}
	var r record
	if err := json.Unmarshal(kve.Value(), &r); err != nil {
		return record{}, 0, false, fmt.Errorf("decode catalog entry %q (revision %d): %w", object, kve.Revision(), err)
	}
	return r, kve.Revision(), true, nil
}

// Processed returns the outcome of an event identity, or "" if it was not processed.
func (c *Catalog) Processed(ctx context.Context, identity string) (string, error) {
	kve, err := c.events.Get(ctx, eventKey(identity))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", natsDown("read event "+identity, err)
	}
	var p processedEvent
	if err := json.Unmarshal(kve.Value(), &p); err != nil {
		return "", fmt.Errorf("decode event %s: %w", identity, err)
	}
	return p.Outcome, nil
}

// Lookup returns the entry of an object key: its record if a worker has recorded a
// result, else the pending entry shown since its event was accepted.
func (c *Catalog) Lookup(ctx context.Context, key string) (Entry, error) {
	r, _, found, err := c.recorded(ctx, key)
	if err != nil {
		return Entry{}, err
	}
	if found {
		return r.entry(), nil
	}
	return c.lookupPending(ctx, key)
}

// Recorded returns the record of an object key (verified or rejected), ErrNotFound
// when no worker has recorded a result. Unlike Lookup it never reads Redis, and with
// Follow running it answers from memory.
func (c *Catalog) Recorded(ctx context.Context, key string) (Entry, error) {
	r, _, found, err := c.recorded(ctx, key)
	if err != nil {
		return Entry{}, err
	}
	if !found {
		return Entry{}, fmt.Errorf("%q: %w", key, ErrNotFound)
	}
	return r.entry(), nil
}
