package admission

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// The operator's limits are a record: they live in JetStream KV (Config.Records, key
// limitsRecord), and the Redis hash the scripts read (`limits`) is a projection of it,
// written after every change, by every worker watching the record, and by Rebuild
// when the ledger was lost. A change is therefore never lost with Redis, and a lost
// ledger never admits under the configured defaults instead of the operator's limits.

const limitsRecord = "limits"

// overrides are what operators changed; what they never set keeps the configured default.
type overrides struct {
	Global        *int                    `json:"global,omitempty"`
	TenantDefault *int                    `json:"tenant_default,omitempty"`
	Tenants       map[string]TenantLimits `json:"tenants,omitempty"`
	Paused        bool                    `json:"paused,omitempty"`
}

func recordsUnavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, ErrRecordsUnavailable, err)
}

// errNoRecords: this ledger was built without its record buckets (an edge's).
var errNoRecords = errors.New("the admission ledger has no record buckets in this role")

func (l *Ledger) loadOverrides(ctx context.Context) (overrides, uint64, error) {
	if l.cfg.Records == nil {
		return overrides{}, 0, errNoRecords
	}
	e, err := l.cfg.Records.Get(ctx, limitsRecord)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return overrides{}, 0, nil
	}
	if err != nil {
		return overrides{}, 0, recordsUnavailable("read limits", err)
	}
	var o overrides
	if err := json.Unmarshal(e.Value(), &o); err != nil {
		return overrides{}, 0, fmt.Errorf("read limits: unreadable record (revision %d): %w", e.Revision(), err)
	}
	return o, e.Revision(), nil
}

// updateOverrides changes the record with fn, compare-and-set on its revision, so that
// concurrent changes from several ingresses are all kept; then projects it to Redis.
func (l *Ledger) updateOverrides(ctx context.Context, fn func(*overrides)) (overrides, error) {
	for range 16 {
		o, rev, err := l.loadOverrides(ctx)
		if err != nil {
			return overrides{}, err
		}
		fn(&o)
		data, err := json.Marshal(o)
		if err != nil {
			return overrides{}, fmt.Errorf("encode limits: %w", err)
		}
		if rev == 0 {
			_, err = l.cfg.Records.Create(ctx, limitsRecord, data)
		} else {
			_, err = l.cfg.Records.Update(ctx, limitsRecord, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed by someone else meanwhile: apply fn to theirs
		}
		if err != nil {
			return overrides{}, recordsUnavailable("store limits", err)
		}
		// The record is what counts; the workers watching it project it too.
		_ = l.project(ctx, o)
		return o, nil
	}
	return overrides{}, errors.New("store limits: too many concurrent changes; retry")
}

// fields is the record as the scripts read it (the `limits` hash).
func (o overrides) fields() []any {
	var f []any
	if o.Global != nil {
		f = append(f, "global", *o.Global)
	}
	if o.TenantDefault != nil {
		f = append(f, "tenant_default", *o.TenantDefault)
	}
	if o.Paused {
		f = append(f, "paused", 1)
	}
	for name, t := range o.Tenants {
		if t.Limit != nil {
			f = append(f, "tenant:"+name, *t.Limit)
		}
		if t.Weight != nil {
			f = append(f, "weight:"+name, strconv.FormatFloat(*t.Weight, 'g', -1, 64))
		}
		if t.RateBps != nil {
			f = append(f, "rate:"+name, *t.RateBps)
		}
	}
	return f
}

// importRedisLimits turns a `limits` hash left by an earlier version (which kept
// limits in Redis only) into the record; none leaves the defaults. A field that does
// not parse is left at its default and named in a warning: failing the rebuild for it
// would stop all admission.
func (l *Ledger) importRedisLimits(ctx context.Context) (overrides, error) {
	h, err := l.rdb.HGetAll(ctx, l.limitsKey()).Result()
	if err != nil {
		return overrides{}, unavailable("read limits", err)
	}
	if len(h) == 0 {
		return overrides{}, nil
	}
	var o overrides
	tenant := func(name string) TenantLimits {
		if o.Tenants == nil {
			o.Tenants = map[string]TenantLimits{}
		}
		return o.Tenants[name]
	}
	var skipped []error
	for k, v := range h {
		field, name, perTenant := strings.Cut(k, ":")
		switch {
		case v == "":
			continue // absent, as the decoder reads it
		case !perTenant && k != "global" && k != "tenant_default" && k != "paused":
			continue // not a limit: nothing the record holds
		case perTenant && (ValidateTenant(name) != nil || field != "tenant" && field != "weight" && field != "rate"):
			continue // a tenant name or a field the record cannot hold: left behind, as before
		}
		// The earlier version wrote numbers only (limits as integers, weights as
		// floats): one that does not parse is a shape error naming the field.
		d := redisreply.New("limits")
		n := d.Hash(h).Float(k)
		if err := d.Err(); err != nil {
			skipped = append(skipped, err)
			continue
		}
		i, i64 := int(n), int64(n)
		switch {
		case k == "global":
			o.Global = &i
		case k == "tenant_default":
			o.TenantDefault = &i
		case k == "paused":
			o.Paused = v == "1"
		default:
			t := tenant(name)
			switch field {
			case "tenant":
				t.Limit = &i
			case "weight":
				t.Weight = &n
			case "rate":
				t.RateBps = &i64
			}
			o.Tenants[name] = t
		}
	}
	if len(skipped) > 0 {
		l.cfg.Logger.Warn("limits an earlier version kept in Redis did not parse and were left at their defaults; set them again with the admin API",
			"err", errors.Join(skipped...))
	}
	return l.updateOverrides(ctx, func(cur *overrides) { *cur = o })
}

// project replaces the Redis copy of the limits with the record, atomically.
func (l *Ledger) project(ctx context.Context, o overrides) error {
	pipe := l.rdb.TxPipeline()
	pipe.Del(ctx, l.limitsKey(), l.cfg.Prefix+"stats") // the shared stats hold limits
	if f := o.fields(); len(f) > 0 {
		pipe.HSet(ctx, l.limitsKey(), f...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("write limits to the ledger", err)
	}
	return nil
}

// WatchLimits keeps the Redis copy of the limits equal to their record until ctx ends:
// every worker runs it, so a change whose ingress died before it wrote Redis, or made
// while Redis was down, still takes effect.
func (l *Ledger) WatchLimits(ctx context.Context) error {
	if l.cfg.Records == nil {
		return errNoRecords
	}
	w, err := l.cfg.Records.Watch(ctx, limitsRecord)
	if err != nil {
		return recordsUnavailable("watch limits", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a deletion (never made)
			}
			var o overrides
			if json.Unmarshal(e.Value(), &o) == nil {
				_ = l.project(ctx, o) // a failure is mended by the next change or Rebuild
			}
		}
	}
}

// Rebuild gives a lost ledger (Redis wiped, restarted without persistence, or new) a
// new generation: the limits from their record, fencing epochs above every earlier
// one, and, when tickets may still be live, a pause of half a stream lease before
// anything is admitted, so that every stream admitted before the loss re-registers
// (or lapses) first and the limits hold throughout. It does nothing when the ledger
// has a generation, and reports whether this call built one. Workers call it when
// Admit finds none, and then put back every live ticket from the stream.
func (l *Ledger) Rebuild(ctx context.Context) (bool, error) {
	o, rev, err := l.loadOverrides(ctx)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		// No record yet: limits an earlier version kept only in Redis become it.
		if o, err = l.importRedisLimits(ctx); err != nil {
			return false, err
		}
	}
	var pause int64
	if l.cfg.LiveTickets != nil {
		live, err := l.cfg.LiveTickets(ctx)
		if err != nil {
			return false, fmt.Errorf("rebuild the ledger: %w", err)
		}
		if live {
			// Edges renew every third of a lease (and stop streaming two thirds after
			// their last renewal), so by half a lease every stream still running has
			// renewed once since the rebuild, and re-registered.
			pause = (l.cfg.StreamLease / 2).Milliseconds()
		}
	}
	args := append([]any{pause, rand.Text()}, o.fields()...)
	res, err := l.run(ctx, rebuildScript, args...).Result()
	if err != nil {
		return false, unavailable("rebuild the ledger", err)
	}
	d := redisreply.New("rebuild")
	built := d.Int(res) // 1: built, 0: there was one
	if err := d.Err(); err != nil {
		return false, fmt.Errorf("rebuild the ledger: %w", err)
	}
	return built == 1, nil
}
