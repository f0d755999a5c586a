package groupcommit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/groupcommit"
)

// recorder is a Send that answers each item doubled, remembers every item it was
// given and how many groups, and can be held shut.
type recorder struct {
	entered atomic.Int32 // Sends begun
	mu      sync.Mutex
	groups  int
	items   []int
	gate    chan struct{} // until it is closed, Send waits on it
}

func (r *recorder) send(ctx context.Context, items []int) []groupcommit.Result[int] {
	r.entered.Add(1)
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.groups++
	r.items = append(r.items, items...)
	r.mu.Unlock()
	out := make([]groupcommit.Result[int], len(items))
	for i, v := range items {
		out[i].Value = 2 * v
	}
	return out
}

func (r *recorder) seen() (groups int, items []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.groups, slices.Clone(r.items)
}

// Calls that arrive together leave in groups, and each caller gets its own answer.
func TestConcurrentCallsShareGroupsAndKeepTheirAnswers(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	g := &groupcommit.Group[int, int]{Send: r.send, Flushers: 2, MaxBatch: 16}
	const n = 200
	var wg sync.WaitGroup
	var calling atomic.Int32
	for i := range n {
		wg.Go(func() {
			calling.Add(1)
			got, err := g.Do(t.Context(), i, nil)
			if err != nil || got != 2*i {
				t.Errorf("call %d answered %d, %v; want %d", i, got, err, 2*i)
			}
		})
	}
	for calling.Load() < n { // the calls line up behind the held flushers
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(r.gate)
	wg.Wait()
	groups, items := r.seen()
	if len(items) != n {
		t.Fatalf("%d items sent, want %d", len(items), n)
	}
	if groups > n/4 {
		t.Errorf("%d calls took %d groups: they were not sent together", n, groups)
	}
}

// While the flusher is stuck, callers that give up are not sent later, a call past
// MaxPending fails at once, and a closed abort channel ends the wait.
func TestAbandonedCallsAreNotSentAndTheLineIsBounded(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	g := &groupcommit.Group[int, int]{Send: r.send, Flushers: 1, MaxPending: 8}
	held := make(chan error, 1)
	go func() { _, err := g.Do(t.Context(), 0, nil); held <- err }()
	for r.entered.Load() == 0 { // the only flusher is in Send
		time.Sleep(time.Millisecond)
	}
	left, cancel := context.WithCancel(t.Context())
	cancel()
	for i := 1; i <= 8; i++ { // eight in line, whose callers are gone at once
		if _, err := g.Do(left, i, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("call %d, its context ended: %v", i, err)
		}
	}
	if _, err := g.Do(t.Context(), 9, nil); !errors.Is(err, groupcommit.ErrFull) {
		t.Fatalf("a ninth call in a line of eight: %v, want ErrFull", err)
	}
	close(r.gate)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if got, err := g.Do(t.Context(), 10, nil); err != nil || got != 20 {
		t.Fatalf("a call once the line cleared: %d, %v", got, err)
	}
	if _, items := r.seen(); !slices.Equal(items, []int{0, 10}) {
		t.Errorf("items sent: %v, want [0 10]: the callers that left were sent", items)
	}

	r2 := &recorder{gate: make(chan struct{})}
	g2 := &groupcommit.Group[int, int]{Send: r2.send, Flushers: 1, MaxBatch: 1}
	go g2.Do(t.Context(), 1, nil) // holds the only flusher
	for r2.entered.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	gone, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := g2.Do(gone, 2, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline: %v", err)
	}
	abort := make(chan struct{})
	close(abort)
	if _, err := g2.Do(t.Context(), 3, abort); !errors.Is(err, groupcommit.ErrAborted) {
		t.Fatalf("a call whose abort closed: %v", err)
	}
	close(r2.gate)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, items := r2.seen(); slices.Contains(items, 3) {
			break // the aborted call still went: only its caller stopped waiting
		} else if time.Now().After(deadline) {
			t.Fatalf("items sent: %v", items)
		}
	}
	if _, items := r2.seen(); slices.Contains(items, 2) {
		t.Errorf("the call whose caller left was sent after it left: %v", items)
	}
}

// A Send that answers for another number of items than it was given fails the whole
// group rather than handing anyone another's answer.
func TestAGroupWithTheWrongNumberOfAnswersFails(t *testing.T) {
	g := &groupcommit.Group[int, int]{Send: func(context.Context, []int) []groupcommit.Result[int] {
		return nil
	}}
	if _, err := g.Do(t.Context(), 1, nil); err == nil {
		t.Fatal("no error for a group answered with no results")
	}
	all := groupcommit.All(2, []int{7}, nil)
	if len(all) != 2 || all[0].Err == nil || all[1].Err == nil {
		t.Fatalf("All with one answer for two items: %+v", all)
	}
	boom := errors.New("boom")
	all = groupcommit.All[int](3, nil, boom)
	for _, r := range all {
		if !errors.Is(r.Err, boom) {
			t.Fatalf("All with an error: %+v", all)
		}
	}
}

// A Send that panics fails its group's calls, not the process, and the next group is
// sent as usual.
func TestAPanickingSendFailsItsGroupOnly(t *testing.T) {
	var calls atomic.Int32
	g := &groupcommit.Group[int, int]{Send: func(_ context.Context, items []int) []groupcommit.Result[int] {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return groupcommit.All(len(items), items, nil)
	}}
	if _, err := g.Do(t.Context(), 1, nil); err == nil {
		t.Fatal("no error from a group whose Send panicked")
	}
	if got, err := g.Do(t.Context(), 2, nil); err != nil || got != 2 {
		t.Fatalf("the group after: %d, %v", got, err)
	}
}
