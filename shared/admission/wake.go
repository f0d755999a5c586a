package admission

import (
	"context"
)

// Wakeups delivers a signal each time the ledger may have work for a worker: a slot
// was freed or a ticket joined a wait queue while slots were free (the scripts publish
// on the ledger's "wake" channel). Signals coalesce: a worker busy admitting finds one
// waiting when it is done, however many arrived. Pub/sub delivers at most once and
// nothing while Redis is away, so a worker keeps its periodic round as well; the
// signal only makes it sooner. The channel closes when ctx ends.
func (l *Ledger) Wakeups(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	sub := l.rdb.Subscribe(ctx, l.cfg.Prefix+"wake")
	go func() {
		defer close(out)
		defer sub.Close()
		msgs := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default: // one is already waiting
				}
			}
		}
	}()
	return out
}
