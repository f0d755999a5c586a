package admission_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
)

// Accept answers a new ticket with what its owner's first poll would read (place in
// line under the fair order, estimate, pause) from the one script run that records
// it; a ticket recorded before is read back as a poll reads it.
func TestAcceptAnswersAsAPoll(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
		two := 2.0
		if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Tenants: map[string]admission.TenantLimits{"gold": {Weight: &two}}}); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		enqueue(t, l, "gold", 5, &seq)
		enqueue(t, l, "free", 3, &seq)
		if _, err := l.Admit(ctx, 1); err != nil {
			t.Fatal(err)
		}
		for _, tenant := range []string{"free", "gold", "new"} {
			seq++
			tk := admission.Ticket{ID: tenant + "-accepted", Object: "o", ETag: "e", Size: 10, Tenant: tenant, Owner: tenant, Seq: seq, Created: time.Now()}
			got, err := l.Accept(ctx, tk)
			if err != nil {
				t.Fatal(err)
			}
			want, err := l.Get(ctx, tk.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != admission.StatusQueued || got.Ahead != want.Ahead || got.ETAKnown != want.ETAKnown || got.Paused != want.Paused {
				t.Errorf("%s: Accept answered %s at %d (estimate known %v, paused %v); a poll reads %s at %d (%v, %v)", tenant,
					got.Status, got.Ahead, got.ETAKnown, got.Paused, want.Status, want.Ahead, want.ETAKnown, want.Paused)
			}
			if got.ID != tk.ID || got.Owner != want.Owner || !got.Created.Equal(want.Created) {
				t.Errorf("%s: Accept answered ticket %+v, the ledger holds %+v", tenant, got.Ticket, want.Ticket)
			}
			if got.Ahead == 0 {
				t.Errorf("%s: a ticket behind 7 others answered position 0", tenant)
			}
		}

		// A retried request finds its ticket: answered as it is now, not created again.
		if err := l.SetPaused(ctx, true); err != nil {
			t.Fatal(err)
		}
		again, err := l.Accept(ctx, admission.Ticket{ID: "free-accepted", Tenant: "free", Seq: seq + 1, Created: time.Now()})
		if err != nil || again.Status != admission.StatusQueued || !again.Paused || again.Object != "o" {
			t.Fatalf("accept again: %+v %v", again, err)
		}
	})
}

// Accepts that arrive together share script runs, and each caller still gets its own
// ticket's answer: here a burst of new tickets mixed with retries of tickets already
// admitted, sent just after Redis forgot its scripts (NOSCRIPT), and one ticket whose
// key holds something else, which fails alone.
func TestConcurrentAcceptsShareScriptRunsAndKeepTheirAnswers(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const admitted, fresh = 32, 224
		l := newLedger(t, rdb, admission.Config{GlobalLimit: admitted})
		var seq uint64
		old := enqueue(t, l, "public", admitted, &seq)
		if g, err := l.Admit(ctx, admitted); err != nil || len(g) != admitted {
			t.Fatalf("admit: %d grants, %v", len(g), err)
		}
		runs := &scriptRuns{before: func() {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Error(err)
			}
		}}
		rdb.AddHook(runs)

		type call struct {
			tk   admission.Ticket
			want admission.Status
		}
		var calls []call
		for _, id := range old {
			calls = append(calls, call{admission.Ticket{ID: id, Tenant: "public", Seq: seq, Created: time.Now()}, admission.StatusAdmitting})
		}
		for i := range fresh {
			seq++
			tk := admission.Ticket{ID: fmt.Sprintf("new-%04d", i), Object: "o", ETag: "e", Size: 10, Tenant: "public", Seq: seq, Created: time.Now()}
			calls = append(calls, call{tk, admission.StatusQueued})
		}
		if err := rdb.Set(ctx, l.Config().Prefix+"t:poisoned", "not a hash", 0).Err(); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call{admission.Ticket{ID: "poisoned", Object: "o", Tenant: "public", Seq: seq + 1, Created: time.Now()}, ""})
		rand.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })

		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		ahead := map[string]int64{} // each new ticket's place when it was accepted
		for _, c := range calls {
			wg.Go(func() {
				<-start
				got, err := l.Accept(ctx, c.tk)
				switch {
				case c.want == "":
					if err == nil {
						t.Errorf("accept %s, whose key is not a ticket's: no error", c.tk.ID)
					}
				case err != nil:
					t.Errorf("accept %s: %v", c.tk.ID, err)
				case got.ID != c.tk.ID || got.Status != c.want:
					t.Errorf("accept %s (%s) answered ticket %s, %s", c.tk.ID, c.want, got.ID, got.Status)
				case c.want == admission.StatusQueued:
					mu.Lock()
					ahead[c.tk.ID] = got.Ahead
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		sent := runs.count()
		// The i-th new ticket is i-th in line once all are in (one tenant, every slot
		// held): when it was accepted, at most those before it were.
		for i := range fresh {
			id := fmt.Sprintf("new-%04d", i)
			if a, ok := ahead[id]; ok && (a < 0 || a > int64(i)) {
				t.Errorf("accept %s answered %d ahead of it; at most %d were", id, a, i)
			}
		}

		st, err := l.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Backlog != fresh || st.InUse != admitted {
			t.Errorf("after the burst: %d queued and %d slots in use, want %d and %d", st.Backlog, st.InUse, fresh, admitted)
		}
		if sent > len(calls)/2 {
			t.Errorf("%d concurrent accepts took %d script runs: they were not sent together", len(calls), sent)
		}
	})
}

// scriptRuns is a go-redis hook that counts the script calls sent (EVALSHA, and EVAL
// after NOSCRIPT), and calls before ahead of the first.
type scriptRuns struct {
	mu     sync.Mutex
	n      int
	before func()
}

func (r *scriptRuns) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *scriptRuns) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *scriptRuns) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (r *scriptRuns) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "evalsha" && name != "eval" {
			return next(ctx, cmd)
		}
		r.mu.Lock()
		r.n++
		before := r.before
		r.before = nil
		r.mu.Unlock()
		if before != nil {
			before()
		}
		return next(ctx, cmd)
	}
}

// While Redis stalls, an Accept whose caller gives up is not sent later: it fails
// with its caller's deadline and leaves nothing behind once Redis answers again.
func TestAnAbandonedAcceptIsNotSentLater(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ctx := t.Context()
	l := newLedger(t, rdb, admission.Config{GlobalLimit: 1})
	admin := redis.NewClient(rdb.Options())
	t.Cleanup(func() { admin.Close() })
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	tk := func(id string) admission.Ticket {
		return admission.Ticket{ID: id, Object: "o", ETag: "e", Size: 1, Tenant: "public", Seq: 1, Created: time.Now()}
	}
	var wg sync.WaitGroup
	// More than the groups in flight can take (4 × 64): every flusher waits on the
	// paused Redis with a full group, and the rest wait in line.
	for i := range 300 {
		wg.Go(func() {
			if _, err := l.Accept(ctx, tk(fmt.Sprintf("held-%d", i))); err != nil {
				t.Errorf("an accept that waited out the pause: %v", err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 8 {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := l.Accept(short, tk(fmt.Sprintf("gone-%d", i)))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("an accept past its deadline: %v, want the deadline", err)
		}
	}
	wg.Wait()
	for i := range 8 {
		if _, err := l.Get(ctx, fmt.Sprintf("gone-%d", i)); !errors.Is(err, admission.ErrNotFound) {
			t.Errorf("an abandoned accept was sent after the pause: %v", err)
		}
	}
}
