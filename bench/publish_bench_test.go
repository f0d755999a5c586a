package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// BenchmarkTicketPublishCluster publishes tickets through queue.Publisher to the
// ticket stream replicated on a three-node cluster of nats-server processes (bin/,
// nats-server's default sync), 64 publishers at once, in each mode of
// --publish-batches, alternately three times: what to choose for a cluster, where
// an atomic batch is staged in memory (on a single server it is staged in a file
// store of its own; BenchmarkTicketAcceptNoSync measures that case). Reported: tickets
// per second and the three servers' CPU per ticket.
func BenchmarkTicketPublishCluster(b *testing.B) {
	cluster := testenv.StartNATSCluster(b, 3)
	nc, err := queue.Connect(cluster.URLs(), "bench-publish", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	if _, err := queue.EnsureTickets(ctx, js, queue.StreamConfig{Replicas: 3}); err != nil {
		b.Fatal(err)
	}
	procs := map[string]int{}
	for i, n := range cluster.Nodes {
		procs[fmt.Sprint("nats", i)] = n.Process.Cmd.Process.Pid
	}
	modes := []struct {
		name string
		mode queue.PublishMode
		pub  *queue.Publisher
	}{{name: "pipelined (off)", mode: queue.Pipelined}, {name: "atomic batches (on)", mode: queue.AtomicBatches}}
	for i := range modes {
		if modes[i].pub, err = queue.NewPublisher(nc, modes[i].mode, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	// the stream's subjects reach every server's routes a moment after its leader is elected
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		_, err := modes[0].pub.Publish(ctx, queue.Ticket{ID: "first", Object: "o", Tenant: "t", Created: time.Now()})
		if err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	for b.Loop() {
		for round := range 3 {
			for _, m := range modes {
				var left atomic.Int64
				left.Store(acceptRequests)
				before, start := cpuTimes(b, procs), time.Now()
				var wg sync.WaitGroup
				for range acceptConcurrency {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							id := fmt.Sprint("c", seq.Add(1))
							if _, err := m.pub.Publish(ctx, queue.Ticket{ID: id, Object: "o", Tenant: "t", Created: time.Now()}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				took, cpu := time.Since(start), since(b, procs, before)
				var total time.Duration
				for _, d := range cpu {
					total += d
				}
				fmt.Fprintf(os.Stderr, "round %d, 3 replicas, %-20s %7.0f tickets/s, servers' CPU %.3f ms per ticket\n",
					round+1, m.name+":", acceptRequests/took.Seconds(), ms(total)/acceptRequests)
			}
		}
	}
}
