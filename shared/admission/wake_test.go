package admission_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
)

// A worker hears at once when there is admission work: a ticket queued while a slot is
// free, a slot given back. A ticket queued while every slot is held wakes nobody,
// whether the limit is an operator's or the workers' default.
func TestWakeupsSignalAdmissionWork(t *testing.T) {
	for _, operator := range []bool{true, false} {
		t.Run(map[bool]string{true: "operator's limit", false: "default limit"}[operator], func(t *testing.T) {
			testWakeups(t, operator)
		})
	}
}

func testWakeups(t *testing.T, operatorLimit bool) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		const lease = 2 * time.Second
		l := newLedger(t, rdb, admission.Config{GlobalLimit: 1, AdmitLease: lease})
		one := 1
		if operatorLimit {
			if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Global: &one}); err != nil {
				t.Fatal(err)
			}
		}
		wake := l.Wakeups(ctx)
		// the subscription is live once a published signal arrives: retry until then
		var seq uint64
		first := enqueue(t, l, "a", 1, &seq)[0]
		expect := func(what string) {
			t.Helper()
			select {
			case <-wake:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake-up after %s", what)
			}
		}
		drain := func() {
			for {
				select {
				case <-wake:
				case <-time.After(200 * time.Millisecond):
					return
				}
			}
		}
		for deadline := time.Now().Add(5 * time.Second); ; {
			select {
			case <-wake:
			case <-time.After(100 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatal("no wake-up for a ticket queued with a free slot")
				}
				enqueue(t, l, "a", 1, &seq) // the first publish came before the subscription
				continue
			}
			break
		}
		if g, err := l.Admit(ctx, 1); err != nil || len(g) != 1 || g[0].Ticket.ID != first {
			t.Fatalf("admit: %v %v", g, err)
		}
		drain()
		enqueue(t, l, "b", 1, &seq)
		select {
		case <-wake:
			t.Fatal("woken by a ticket queued while every slot is held")
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := l.Cancel(ctx, first); err != nil {
			t.Fatal(err)
		}
		expect("a slot was given back")
		drain()
		enqueue(t, l, "c", 1, &seq)
		expect("a ticket queued with a slot free")
		// A grant whose lease lapsed holds no slot: the next round reclaims it.
		if g, err := l.Admit(ctx, 1); err != nil || len(g) != 1 {
			t.Fatalf("admit: %v %v", g, err)
		}
		time.Sleep(lease + 200*time.Millisecond)
		drain()
		enqueue(t, l, "d", 1, &seq)
		expect("a ticket queued behind a lapsed lease")
	})
}
