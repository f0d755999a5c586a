package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// Concurrent publishes leave together, pipelined or in atomic batches, and each still
// gets the sequence its own message is stored at: what the stream holds under each
// ticket's subject. Tickets published again (a retry after a timeout) mixed with new
// ones make batches the server refuses whole; each is then stored once and answered
// with its first sequence.
func TestConcurrentPublishesKeepTheirOwnSequences(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode queue.PublishMode
	}{{"pipelined", queue.Pipelined}, {"atomic batches", queue.AtomicBatches}} {
		t.Run(mode.name, func(t *testing.T) { testConcurrentPublishes(t, mode.mode) })
	}
}

func testConcurrentPublishes(t *testing.T, mode queue.PublishMode) {
	srv := testenv.StartNATS(t)
	nc, js := connect(t, srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := queue.EnsureTickets(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, nc, mode, 10*time.Second)

	const writers, each = 64, 30
	var mu sync.Mutex
	seqs := map[string]uint64{}
	publishAll := func(ids func(w, i int) string) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					id := ids(w, i)
					seq, err := pub.Publish(ctx, queue.Ticket{ID: id, Object: "o", Tenant: fmt.Sprint("t", w%4), Created: time.Now()})
					if err != nil {
						t.Errorf("publish %s: %v", id, err)
						return
					}
					mu.Lock()
					if old, ok := seqs[id]; ok && old != seq {
						t.Errorf("ticket %s published again answered sequence %d, first %d", id, seq, old)
					}
					seqs[id] = seq
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	publishAll(func(w, i int) string { return fmt.Sprintf("a-%d-%d", w, i) })
	// every other ticket again, among new ones
	publishAll(func(w, i int) string {
		if i%2 == 0 {
			return fmt.Sprintf("a-%d-%d", w, i)
		}
		return fmt.Sprintf("b-%d-%d", w, i)
	})
	if t.Failed() {
		return
	}

	want := writers*each + writers*each/2
	if len(seqs) != want {
		t.Fatalf("%d tickets answered, want %d", len(seqs), want)
	}
	bySeq := map[uint64]string{}
	for id, seq := range seqs {
		if other, ok := bySeq[seq]; ok {
			t.Fatalf("tickets %s and %s both answered sequence %d", id, other, seq)
		}
		bySeq[seq] = id
	}
	s, err := js.Stream(ctx, queue.TicketStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != uint64(want) {
		t.Fatalf("stream holds %v messages (%v), want %d: a retried ticket was stored twice", info.State.Msgs, err, want)
	}
	tickets := queue.NewTickets(js)
	for id, seq := range seqs {
		tk, err := tickets.Lookup(ctx, id)
		if err != nil || tk.ID != id || tk.Seq != seq {
			t.Fatalf("ticket %s answered sequence %d; the stream holds it at %d (%v)", id, seq, tk.Seq, err)
		}
	}
}

func newPublisher(t *testing.T, nc *nats.Conn, mode queue.PublishMode, timeout time.Duration) *queue.Publisher {
	t.Helper()
	p, err := queue.NewPublisher(nc, mode, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A publish waiting for its answer when the connection drops fails at once with
// ErrUnavailable (the ingress answers 503), not at its timeout: the server is frozen
// (SIGSTOP) so the answer cannot come, then killed, which drops the connection.
func TestPublishFailsAtOnceWhenTheConnectionDrops(t *testing.T) {
	srv := testenv.StartNATSProcess(t, testenv.NATSProcessOptions{})
	nc, js := connect(t, srv.URL)
	if _, err := queue.EnsureTickets(t.Context(), js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Minute
	p := newPublisher(t, nc, queue.Pipelined, timeout) // one at a time: a plain publish in either mode
	ticket := func(id string) queue.Ticket {
		return queue.Ticket{ID: id, Object: "o", Tenant: "a", Created: time.Now()}
	}
	if _, err := p.Publish(t.Context(), ticket("before")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	status := fmt.Sprintf("/proc/%d/status", srv.Cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st, _ := os.ReadFile(status); strings.Contains(string(st), "State:\tT") {
			break // frozen
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not stop on SIGSTOP")
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Publish(t.Context(), ticket("during"))
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // sent; its answer cannot come
	dropped := time.Now()
	if err := srv.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, queue.ErrUnavailable) {
			t.Fatalf("publish when the connection dropped: %v, want ErrUnavailable", err)
		}
		if took := time.Since(dropped); took > timeout/4 {
			t.Fatalf("publish failed %s after the connection dropped, want at once (its timeout is %s)", took, timeout)
		}
	case <-time.After(timeout / 2):
		t.Fatalf("publish still waiting %s after the connection dropped", timeout/2)
	}
}

// connect dials the NATS server at url for a test, closed at its end.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := queue.Connect(url, t.Name(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
