package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// Against three real nats-server processes: Connect takes the comma-separated URL list,
// the ticket stream is replicated three times, and killing the stream's leader loses no
// acknowledged ticket; publishing resumes once a new leader is elected.
func TestReplicatedTicketsSurviveALeaderCrash(t *testing.T) {
	cluster := testenv.StartNATSCluster(t, 3)
	log := slog.New(slog.DiscardHandler)
	nc, err := queue.Connect(cluster.URLs(), "cluster-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cons, err := queue.EnsureTickets(ctx, js, queue.StreamConfig{Replicas: 3, AckWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, queue.TicketStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream has %d replicas, want 3", r)
	}

	pub := newPublisher(t, nc, queue.Pipelined, 2*time.Second) // what --publish-batches=auto sends a cluster
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
	)
	publish := func(id string) error {
		_, err := pub.Publish(ctx, queue.Ticket{ID: id, Object: "o", Tenant: "t", Created: time.Now()})
		if err == nil {
			mu.Lock()
			acked[id] = true
			mu.Unlock()
		}
		return err
	}
	// A new stream's subjects reach the other servers' routes a moment after its leader
	// is elected; until then a publish finds no responder (the ingress answers 503 and
	// the client retries). Wait for the first acknowledgement as a client would.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		err := publish("before-first")
		if err == nil {
			break
		}
		if !errors.Is(err, queue.ErrUnavailable) || time.Since(start) > 10*time.Second {
			t.Fatalf("first publish to the new stream: %v", err)
		}
	}
	for i := range 200 {
		if err := publish(fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatalf("publish before the crash: %v", err)
		}
	}

	leader := cluster.Node(cluster.StreamLeader(cluster.Nodes[0], queue.TicketStream))
	if leader == nil {
		t.Fatal("could not find the stream leader through /jsz")
	}
	cluster.Kill(leader)
	crashed := time.Now()
	// Keep publishing: some attempts fail while a new leader is elected (the caller
	// would answer 503 and the client retry); every acknowledged one must survive.
	var failed, after int
	for i := 0; after < 200; i++ {
		if time.Since(crashed) > 60*time.Second {
			t.Fatalf("publishing did not resume within 60s of the leader crash (%d failed)", failed)
		}
		if err := publish(fmt.Sprintf("after-%d", i)); err != nil {
			if !errors.Is(err, queue.ErrUnavailable) {
				t.Fatalf("publish during failover: %v, want ErrUnavailable", err)
			}
			failed++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		after++
	}
	t.Logf("leader %s killed; %d publishes refused during failover, service back after %s",
		leader.Name, failed, time.Since(crashed).Round(time.Millisecond))

	// The consumer elects its own leader after the stream's: pulls may come back empty
	// for a while, as they do for a worker, which keeps pulling.
	got := map[string]bool{}
	for deadline := time.Now().Add(60 * time.Second); len(got) < len(acked) && time.Now().Before(deadline); {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var tk queue.Ticket
			if err := json.Unmarshal(m.Data(), &tk); err != nil {
				t.Fatal(err)
			}
			got[tk.ID] = true
			_ = m.Ack()
		}
	}
	for id := range acked {
		if !got[id] {
			t.Errorf("acknowledged ticket %s lost after the leader crash", id)
		}
	}
	if len(got) != len(acked) {
		t.Fatalf("consumed %d tickets, %d were acknowledged", len(got), len(acked))
	}

	// The killed node comes back and catches up.
	cluster.Restart(leader)
}
