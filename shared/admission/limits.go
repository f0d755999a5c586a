package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// ErrInvalidLimits is returned for limits that cannot be applied.
var ErrInvalidLimits = errors.New("invalid limits")

// TenantLimits are one tenant's overrides; nil fields keep the default.
type TenantLimits struct {
	Limit  *int     `json:"limit,omitempty"`  // slots the tenant may hold at once, 0 = no own limit
	Weight *float64 `json:"weight,omitempty"` // share of slots when tenants compete (default 1)
	// RateBps caps each of the tenant's downloads, in bytes per second, 0 = the edge's
	// default. It is written into the tokens of tickets admitted after the change.
	RateBps *int64 `json:"rate_bps,omitempty"`
}

// Limits are the admission limits in force. They live in Redis, so a change takes
// effect at the next admission on every worker.
type Limits struct {
	Global        int                     `json:"global"`
	TenantDefault int                     `json:"tenant_default"`
	Tenants       map[string]TenantLimits `json:"tenants"`
	Paused        bool                    `json:"paused"`
}

// LimitsUpdate changes some limits; nil fields stay as they are.
type LimitsUpdate struct {
	Global        *int                    `json:"global,omitempty"`
	TenantDefault *int                    `json:"tenant_default,omitempty"`
	Tenants       map[string]TenantLimits `json:"tenants,omitempty"`
}

func (l *Ledger) limitsKey() string { return l.cfg.Prefix + "limits" }

// Limits returns the limits in force (from their record), with the configured defaults
// where no operator has set a value.
func (l *Ledger) Limits(ctx context.Context) (Limits, error) {
	o, _, err := l.loadOverrides(ctx)
	if err != nil {
		return Limits{}, err
	}
	return l.limitsFrom(o), nil
}

func (l *Ledger) limitsFrom(o overrides) Limits {
	out := Limits{Global: l.cfg.GlobalLimit, TenantDefault: l.cfg.TenantLimit, Tenants: map[string]TenantLimits{}, Paused: o.Paused}
	if o.Global != nil {
		out.Global = *o.Global
	}
	if o.TenantDefault != nil {
		out.TenantDefault = *o.TenantDefault
	}
	for name, t := range o.Tenants {
		out.Tenants[name] = t
	}
	return out
}

// SetLimits checks every value, then applies the update to the record at once.
func (l *Ledger) SetLimits(ctx context.Context, u LimitsUpdate) (Limits, error) {
	if u.Global != nil && (*u.Global < 0 || *u.Global > 1_000_000) {
		return Limits{}, fmt.Errorf("%w: global must be between 0 and 1000000, got %d", ErrInvalidLimits, *u.Global)
	}
	if u.TenantDefault != nil && *u.TenantDefault < 0 {
		return Limits{}, fmt.Errorf("%w: tenant_default must be 0 (none) or more, got %d", ErrInvalidLimits, *u.TenantDefault)
	}
	for name, t := range u.Tenants {
		if err := ValidateTenant(name); err != nil {
			return Limits{}, fmt.Errorf("%w: %v", ErrInvalidLimits, err)
		}
		if t.Limit != nil && *t.Limit < 0 {
			return Limits{}, fmt.Errorf("%w: limit of tenant %s must be 0 (none) or more", ErrInvalidLimits, name)
		}
		if t.RateBps != nil && *t.RateBps < 0 {
			return Limits{}, fmt.Errorf("%w: rate_bps of tenant %s must be 0 (the default) or more bytes per second", ErrInvalidLimits, name)
		}
		if t.Weight != nil && !(*t.Weight > 0 && *t.Weight <= 1000) {
			return Limits{}, fmt.Errorf("%w: weight of tenant %s must be above 0 and at most 1000", ErrInvalidLimits, name)
		}
	}
	o, err := l.updateOverrides(ctx, func(o *overrides) {
		if u.Global != nil {
			o.Global = u.Global
		}
		if u.TenantDefault != nil {
			o.TenantDefault = u.TenantDefault
		}
		for name, t := range u.Tenants {
			if o.Tenants == nil {
				o.Tenants = map[string]TenantLimits{}
			}
			cur := o.Tenants[name]
			if t.Limit != nil {
				cur.Limit = t.Limit
			}
			if t.Weight != nil {
				cur.Weight = t.Weight
			}
			if t.RateBps != nil {
				cur.RateBps = t.RateBps
			}
			o.Tenants[name] = cur
		}
	})
	if err != nil {
		return Limits{}, err
	}
	// A raised limit may free slots for queued tickets: best effort, as SetPaused.
	_ = l.rdb.Publish(ctx, l.cfg.Prefix+"wake", "").Err()
	return l.limitsFrom(o), nil
}

// SetPaused stops (true) or restarts (false) admissions. Queued tickets keep their place;
// on a restart the workers are woken (Wakeups) to admit them at once.
func (l *Ledger) SetPaused(ctx context.Context, paused bool) error {
	if _, err := l.updateOverrides(ctx, func(o *overrides) { o.Paused = paused }); err != nil {
		return err
	}
	if !paused {
		// Best effort: a worker that misses it admits at its next round.
		_ = l.rdb.Publish(ctx, l.cfg.Prefix+"wake", "").Err()
	}
	return nil
}

// ValidateTenant checks a tenant name: it is used in Redis keys and NATS subjects.
func ValidateTenant(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("tenant name must be 1 to 64 characters, got %q", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("tenant name %q may only hold a-z, 0-9, '-' and '_'", name)
		}
	}
	return nil
}

// TenantStats is one tenant's part of the picture.
type TenantStats struct {
	Queued int64
	InUse  int64
	Limit  int64 // 0 = no own limit
	Weight float64
}

// Stats is a consistent snapshot of admission. Its wire form is api.Stats.
type Stats struct {
	Paused     bool
	Limit      int64
	InUse      int64
	Backlog    int64
	Admissible int64 // what more workers could admit now
	Rate       float64
	Tenants    map[string]TenantStats
	// Tickets counts live tickets by status: queued (the backlog) and those holding a
	// slot (admitting, ready, streaming).
	Tickets map[Status]int64
	// Ended counts the tickets that ever ended, by status (done, expired, failed,
	// canceled): counters for metrics, kept as long as Redis keeps its data.
	Ended map[Status]int64
}

// Stats reads the snapshot in one script, so its numbers agree with each other. Its
// cost grows with the tenants and the held slots (a few reads each): for what reads
// it every second, see SharedStats.
func (l *Ledger) Stats(ctx context.Context) (Stats, error) {
	vals, err := l.run(ctx, statsScript, l.cfg.GlobalLimit, l.cfg.TenantLimit, l.cfg.RateWindow.Milliseconds()).Slice()
	if err != nil {
		return Stats{}, unavailable("read admission stats", err)
	}
	return statsFromReply(vals)
}

// SharedStats is Stats as anyone in the fleet computed it within the last OrderMaxAge:
// the first caller after that computes it and leaves it in Redis (the key "stats",
// JSON) for the others, so every replica's scrapes and every open dashboard cost one
// computation per OrderMaxAge together, and a read is one GET. Writing the limits
// deletes it, so a pause or a new limit shows at once; other figures may be up to
// OrderMaxAge old.
func (l *Ledger) SharedStats(ctx context.Context) (Stats, error) {
	key := l.cfg.Prefix + "stats"
	if raw, err := l.rdb.Get(ctx, key).Bytes(); err == nil {
		var s Stats
		if json.Unmarshal(raw, &s) == nil {
			return s, nil
		}
	} else if !errors.Is(err, redis.Nil) {
		return Stats{}, unavailable("read admission stats", err)
	}
	s, err := l.Stats(ctx)
	if err != nil {
		return s, err
	}
	if raw, err := json.Marshal(s); err == nil {
		// best effort: without it the next caller computes the stats again
		_ = l.rdb.Set(ctx, key, raw, l.cfg.OrderMaxAge).Err()
	}
	return s, nil
}

func statsFromReply(vals []any) (Stats, error) {
	d := redisreply.New("stats")
	reply := d.Array(vals, 6)
	s := Stats{Paused: reply.Int(0) == 1, Limit: reply.Int(1), InUse: reply.Int(2), Tenants: map[string]TenantStats{}}
	if count, span := reply.Int(3), reply.Int(4); count >= minCompletions && span >= 1000 {
		s.Rate = float64(count) / (time.Duration(span) * time.Millisecond).Seconds()
	}
	rows := reply.Array(5, 0)
	free := max(s.Limit-s.InUse, 0)
	var admissible int64
	for i := range rows.Len() {
		r := rows.Array(i, 5) // { tenant, queued, in use, limit, weight }
		ts := TenantStats{Queued: r.Int(1), InUse: r.Int(2), Limit: r.Int(3), Weight: r.Float(4)}
		s.Tenants[r.String(0)] = ts
		s.Backlog += ts.Queued
		can := ts.Queued
		if ts.Limit > 0 {
			can = min(can, max(ts.Limit-ts.InUse, 0))
		}
		admissible += can
	}
	if !s.Paused {
		s.Admissible = min(admissible, free)
	}
	s.Tickets = map[Status]int64{StatusQueued: s.Backlog, StatusAdmitting: 0, StatusReady: 0, StatusStreaming: 0}
	s.Ended = map[Status]int64{StatusDone: 0, StatusExpired: 0, StatusFailed: 0, StatusCanceled: 0}
	for i, dst := range []map[Status]int64{s.Tickets, s.Ended} {
		if reply.Len() <= 6+i {
			break
		}
		counts := reply.Pairs(6 + i) // { status, count, ... }
		for st := range counts.Fields() {
			dst[Status(st)] = counts.Int(st)
		}
	}
	if err := d.Err(); err != nil {
		return Stats{}, fmt.Errorf("read admission stats: %w", err)
	}
	return s, nil
}
