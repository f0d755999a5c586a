package workers_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/token"
	"github.com/sluice-dl/sluice/workers"
)

// tokens is a token issuer that names the ticket in the token, and keeps the claims.
type tokens struct {
	mu     sync.Mutex
	claims map[string]token.Claims
}

func (k *tokens) Issue(c token.Claims) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.claims == nil {
		k.claims = map[string]token.Claims{}
	}
	k.claims[c.Ticket] = c
	return "token-" + c.Ticket, nil
}

func (k *tokens) issued(id string) (token.Claims, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, ok := k.claims[id]
	return c, ok
}

// admissionEnv is an admission worker over redis-server and an in-process JetStream,
// with the ticket stream, its consumer and the ledger's records, as a sluice worker
// has them.
type admissionEnv struct {
	rdb      *redis.Client
	js       jetstream.JetStream
	ledger   *admission.Ledger
	pub      *queue.Publisher
	tokens   *tokens
	worker   *workers.Admission
	admitted atomic.Int64
	// ticketReads counts the commands the worker sent that read one ticket (HGET,
	// HGETALL): what its sweep costs per held ticket.
	ticketReads atomic.Int64
	seq         int
}

// countTicketReads is a go-redis hook that counts the commands reading one ticket.
type countTicketReads struct{ n *atomic.Int64 }

func (h countTicketReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countTicketReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h countTicketReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}
func (h countTicketReads) count(cmd redis.Cmder) {
	if n := cmd.Name(); n == "hget" || n == "hgetall" {
		h.n.Add(1)
	}
}

// startAdmission runs an admission worker until the test ends, under a global limit,
// sweeping its held messages every sweep.
func startAdmission(t *testing.T, limit int, sweep time.Duration) *admissionEnv {
	t.Helper()
	e := newAdmission(t, limit, sweep)
	e.start(t)
	return e
}

// newAdmission is startAdmission's worker, not started yet.
func newAdmission(t *testing.T, limit int, sweep time.Duration) *admissionEnv {
	t.Helper()
	ctx := t.Context()
	js := testenv.StartNATS(t).JetStream(t)
	consumer, err := queue.EnsureTickets(ctx, js, queue.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := admission.Config{
		GlobalLimit: limit,
		// A rebuilt ledger waits half a stream lease for streams to re-register.
		StreamLease: 2 * time.Second,
		LiveTickets: queue.NewTickets(js).Live,
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{queue.SettingsBucket, &cfg.Records}, {queue.IdempotencyBucket, &cfg.Bindings}, {queue.EndedBucket, &cfg.Ended}} {
		if *b.kv, err = queue.EnsureRecords(ctx, js, queue.RecordConfig{Bucket: b.name}); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := queue.NewPublisher(js.Conn(), queue.AtomicBatches, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := &admissionEnv{rdb: testenv.StartRedis(t).Client(t), js: js, tokens: &tokens{}, pub: pub}
	e.rdb.AddHook(countTicketReads{&e.ticketReads})
	e.ledger = admission.New(e.rdb, cfg)
	e.worker = workers.NewAdmission(workers.AdmissionConfig{
		Consumer:      consumer,
		Acker:         queue.NewAcker(js.Conn()),
		Backlog:       queue.NewTickets(js),
		Ledger:        e.ledger,
		Tokens:        e.tokens,
		PublicEdgeURL: "https://edge.test",
		AdmitEvery:    20 * time.Millisecond,
		SweepEvery:    sweep,
		Logger:        slog.New(slog.DiscardHandler),
		OnAdmitted:    func(time.Duration) { e.admitted.Add(1) },
	})
	return e
}

// start runs the worker until the test ends.
func (e *admissionEnv) start(t *testing.T) {
	t.Helper()
	// As a sluice process does before its ingress takes a ticket: a fresh ledger is
	// built before any ticket could be live.
	e.worker.Prepare(t.Context())
	run(t, e.worker.Run)
}

// run runs fn until the test ends, and checks that it then returns nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the worker did not stop within 30 s of its context's end")
		}
	})
}

// publish stores n tickets in the stream, as the ingress does (without recording them
// in the ledger: the worker does that when it receives them), and returns their ids
// in order.
func (e *admissionEnv) publish(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		e.seq++
		tk := queue.Ticket{ID: fmt.Sprintf("t%026d", e.seq), Object: "demo/hello.txt", ETag: "e1", Size: 14,
			Tenant: "public", Created: time.Now()}
		if _, err := e.pub.Publish(t.Context(), tk); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	return ids
}

// statuses counts the tickets' statuses in the ledger.
func (e *admissionEnv) statuses(t *testing.T, ids []string) map[admission.Status]int {
	t.Helper()
	st, err := e.ledger.Statuses(t.Context(), ids)
	if err != nil {
		t.Fatal(err)
	}
	n := map[admission.Status]int{}
	for _, s := range st {
		n[s]++
	}
	return n
}

// A backlog the worker finds waiting costs one ledger round trip per group of
// messages, not one per ticket; every ticket is recorded and held all the same. These
// were never recorded (as when the ingress could not reach Redis): the worker also
// enqueues each group's in one script run.
func TestAdmissionReceivesABacklogInGroups(t *testing.T) {
	e := newAdmission(t, 1, time.Hour)
	const n = 600
	ids := e.publish(t, n)
	var trips, enqueues atomic.Int64
	e.rdb.AddHook(countStatusTrips{n: &trips, enqueues: &enqueues})
	e.start(t)
	eventually(t, 20*time.Second, "every ticket held", func() bool { return e.worker.Held() == n })
	got := trips.Load()
	if runs := enqueues.Load(); runs > n/10 {
		t.Errorf("recording %d tickets took %d enqueue script runs, want groups (at most %d)", n, runs, n/10)
	}
	if st := e.statuses(t, ids); st[admission.StatusQueued]+st[admission.StatusReady] != n {
		t.Errorf("of %d tickets held, the ledger has: %v", n, st)
	}
	// The consumer delivers what it pulled ahead (up to 1,000) while the first group
	// is received: a few groups, however the scheduler runs them.
	t.Logf("%d waiting tickets received in %d status round trips", n, got)
	if got > n/10 {
		t.Errorf("receiving %d waiting tickets took %d status round trips, want groups (at most %d)", n, got, n/10)
	}
}

// countStatusTrips is a go-redis hook that counts the round trips reading ticket
// statuses (Ledger.Statuses) and the runs of the enqueue script.
type countStatusTrips struct{ n, enqueues *atomic.Int64 }

func (h countStatusTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countStatusTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	enqueue := admission.Scripts()["admission.enqueue"].Hash()
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && (cmd.Name() == "evalsha" && a[1] == enqueue) {
			h.enqueues.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h countStatusTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if a := cmds[0].Args(); len(a) == 3 && cmds[0].Name() == "hget" && a[2] == "status" {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// The worker records the tickets it receives, admits as many as the limit allows,
// oldest first, gives each a link carrying its signed claims, and admits the next
// when a slot frees.
func TestAdmissionAdmitsUnderTheLimit(t *testing.T) {
	e := startAdmission(t, 2, 100*time.Millisecond)
	ids := e.publish(t, 5)

	eventually(t, 10*time.Second, "two of five tickets ready, three queued", func() bool {
		n := e.statuses(t, ids)
		return n[admission.StatusReady] == 2 && n[admission.StatusQueued] == 3
	})
	// Many admit rounds later the limit still holds.
	time.Sleep(20 * 20 * time.Millisecond)
	if n := e.statuses(t, ids); n[admission.StatusReady] != 2 || n[admission.StatusQueued] != 3 {
		t.Fatalf("statuses under a limit of 2: %v", n)
	}
	for _, id := range ids[:2] {
		p, err := e.ledger.Get(t.Context(), id)
		if err != nil || p.Status != admission.StatusReady {
			t.Fatalf("the oldest ticket %s: %+v %v", id, p.Status, err)
		}
		if want := "https://edge.test/d/token-" + id + "/hello.txt"; p.DownloadURL != want {
			t.Errorf("link %q, want %q", p.DownloadURL, want)
		}
		c, ok := e.tokens.issued(id)
		if !ok || c.Object != "demo/hello.txt" || c.ETag != "e1" || c.Tenant != "public" || c.Epoch == 0 ||
			time.Until(c.Expires) <= 0 {
			t.Errorf("claims of %s: %+v", id, c)
		}
	}
	eventually(t, 10*time.Second, "the worker holds one message per live ticket", func() bool { return e.worker.Held() == 5 })

	// A cancel frees a slot: the next oldest is admitted, and the canceled ticket's
	// message is acknowledged once its end is recorded.
	if _, err := e.ledger.Cancel(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the third ticket admitted after a cancel", func() bool {
		st, err := e.ledger.Statuses(t.Context(), ids[2:3])
		return err == nil && st[0] == admission.StatusReady
	})
	eventually(t, 10*time.Second, "the canceled ticket's message acknowledged", func() bool { return e.worker.Held() == 4 })
	if _, err := e.ledger.Ended(t.Context(), ids[0]); err != nil {
		t.Errorf("the canceled ticket's end is not recorded: %v", err)
	}
	if n := e.admitted.Load(); n != 3 {
		t.Errorf("OnAdmitted told of %d admissions, want 3", n)
	}
}

// When Redis loses the ledger (FLUSHALL), the worker rebuilds it and refills it from
// the ticket stream at once: every live ticket is back, at its old place in line,
// before its message is redelivered; once their clients poll, admission resumes under
// the limit.
func TestAdmissionRebuildsAWipedLedger(t *testing.T) {
	// No sweep during the test: only the rebuild's refill from the stream can bring
	// the lost tickets back.
	e := startAdmission(t, 2, time.Hour)
	ids := e.publish(t, 4)
	eventually(t, 10*time.Second, "two tickets ready, two queued, all four held", func() bool {
		n := e.statuses(t, ids)
		return n[admission.StatusReady] == 2 && n[admission.StatusQueued] == 2 && e.worker.Held() == 4
	})
	seqs := map[string]uint64{}
	for _, id := range ids {
		p, err := e.ledger.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		seqs[id] = p.Seq
	}

	if err := e.rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every ticket back in the ledger", func() bool {
		return e.statuses(t, ids)[""] == 0
	})
	for _, id := range ids {
		p, err := e.ledger.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq != seqs[id] || p.Status != admission.StatusQueued {
			t.Errorf("%s restored as %s at seq %d, was seq %d", id, p.Status, p.Seq, seqs[id])
		}
	}
	if n := e.worker.Held(); n != 4 {
		t.Errorf("the worker holds %d messages, want 4", n)
	}

	// Clients poll; after the rebuild's pause the oldest two are admitted again.
	eventually(t, 15*time.Second, "two tickets admitted again after the rebuild", func() bool {
		for _, id := range ids {
			if _, err := e.ledger.Poll(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
		return e.statuses(t, ids)[admission.StatusReady] == 2
	})
	time.Sleep(10 * 20 * time.Millisecond)
	if n := e.statuses(t, ids); n[admission.StatusReady] != 2 || n[admission.StatusQueued] != 2 {
		t.Errorf("statuses after the rebuild: %v", n)
	}
	for _, id := range ids[:2] {
		if p, _ := e.ledger.Get(t.Context(), id); !strings.HasSuffix(p.DownloadURL, "/hello.txt") || p.Status != admission.StatusReady {
			t.Errorf("after the rebuild the oldest ticket %s is %s", id, p.Status)
		}
	}
}

// Waiting tickets cost the worker nothing per sweep: with hundreds held, sweeps read the
// log of ended tickets, not each ticket, and a ticket that ends is still settled.
func TestAdmissionSweepCostDoesNotGrowWithTheQueue(t *testing.T) {
	const n = 300
	e := startAdmission(t, 1, 50*time.Millisecond)
	ids := e.publish(t, n)
	eventually(t, 20*time.Second, "every ticket held, one admitted", func() bool {
		return e.worker.Held() == n && e.statuses(t, ids)[admission.StatusReady] == 1
	})
	time.Sleep(200 * time.Millisecond) // past the first sweep, which checks every held ticket once
	before := e.ticketReads.Load()
	time.Sleep(20 * 50 * time.Millisecond)
	if reads := e.ticketReads.Load() - before; reads > n/10 {
		t.Errorf("%d ticket reads in about 20 sweeps with %d tickets held (a sweep that asked after each would make %d)", reads, n, 20*n)
	}
	if _, err := e.ledger.Cancel(t.Context(), ids[n-1]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the canceled ticket's message acknowledged", func() bool { return e.worker.Held() == n-1 })
	if _, err := e.ledger.Ended(t.Context(), ids[n-1]); err != nil {
		t.Errorf("the canceled ticket's end is not recorded: %v", err)
	}
}

var eventually = testenv.Eventually
