package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
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

// The admission benchmarks run the worker in this process against a real redis-server
// and the in-process nats-server (testenv), with the real keyring signing links.

// admissionBench is a ledger, the ticket stream and one admission worker over them.
type admissionBench struct {
	redis  *testenv.Redis
	rdb    *redis.Client
	js     jetstream.JetStream
	ledger *admission.Ledger
	pub    *queue.Publisher
	stream queue.StreamConfig
	// ready is told of every link the worker published, as ready.lua answered.
	ready func(ids []string)
}

// newAdmissionBench is the ledger and the ticket stream over a real redis-server and
// the in-process nats-server.
func newAdmissionBench(b *testing.B, limit int, stream queue.StreamConfig) *admissionBench {
	b.Helper()
	return newAdmissionBenchOn(b, testenv.StartNATS(b).JetStream(b), limit, stream)
}

// newAdmissionBenchOn is newAdmissionBench over the JetStream js.
func newAdmissionBenchOn(b *testing.B, js jetstream.JetStream, limit int, stream queue.StreamConfig) *admissionBench {
	b.Helper()
	ctx := b.Context()
	e := &admissionBench{redis: testenv.StartRedis(b), js: js, stream: stream, ready: func([]string) {}}
	e.rdb = e.redis.Client(b)
	if _, err := queue.EnsureTickets(ctx, e.js, stream); err != nil {
		b.Fatal(err)
	}
	cfg := admission.Config{GlobalLimit: limit, LiveTickets: queue.NewTickets(e.js).Live}
	for _, k := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{queue.SettingsBucket, &cfg.Records}, {queue.IdempotencyBucket, &cfg.Bindings}, {queue.EndedBucket, &cfg.Ended}} {
		kv, err := queue.EnsureRecords(ctx, e.js, queue.RecordConfig{Bucket: k.name})
		if err != nil {
			b.Fatal(err)
		}
		*k.kv = kv
	}
	e.ledger = admission.New(e.rdb, cfg)
	if _, err := e.ledger.Rebuild(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := e.ledger.SetLimits(ctx, admission.LimitsUpdate{Global: &limit}); err != nil {
		b.Fatal(err)
	}
	pub, err := queue.NewPublisher(e.js.Conn(), queue.AtomicBatches, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	e.pub = pub
	return e
}

// timedLedger is the ledger as the worker uses it, telling of each published link.
type timedLedger struct {
	*admission.Ledger
	ready func(ids []string)
}

func (l timedLedger) Ready(ctx context.Context, links []admission.Link) ([]error, error) {
	errs, err := l.Ledger.Ready(ctx, links)
	if err == nil {
		ids := make([]string, 0, len(links))
		for i, k := range links {
			if errs[i] == nil {
				ids = append(ids, k.Grant.Ticket.ID)
			}
		}
		l.ready(ids)
	}
	return errs, err
}

// startWorker runs one admission worker until stop is called (which hands its held
// messages back).
func (e *admissionBench) startWorker(b *testing.B, cfg workers.AdmissionConfig) (w *workers.Admission, stop func()) {
	b.Helper()
	consumer, err := queue.EnsureTickets(b.Context(), e.js, e.stream)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := token.NewKeyring("k1", map[string][]byte{"k1": []byte("bench-signing-key-0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	cfg.Consumer, cfg.Acker, cfg.Backlog = consumer, queue.NewAcker(e.js.Conn()), queue.NewTickets(e.js)
	cfg.Ledger, cfg.Tokens = timedLedger{e.ledger, func(ids []string) { e.ready(ids) }}, keys
	cfg.PublicEdgeURL, cfg.Logger = "http://edge.bench", slog.New(slog.DiscardHandler)
	cfg.AckWait = e.stream.AckWait
	w = workers.NewAdmission(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	b.Cleanup(stop)
	return w, stop
}

func benchTicket(i int, tenant string) queue.Ticket {
	return queue.Ticket{ID: fmt.Sprintf("bt%024d", i), Object: "releases/v1/app.tar.gz", ETag: "e1", Size: 1 << 20,
		Tenant: tenant, Created: time.Now()}
}

// acquireLua is the peer of the drain: the least a grant is in Redis (an epoch, a
// lease, the ticket's status), one script call after the other.
var acquireLua = redis.NewScript(`
local epoch = redis.call('INCR', KEYS[1] .. 'epoch')
redis.call('ZADD', KEYS[1] .. 'slots', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1] .. 't:' .. ARGV[1], 'status', 'admitting', 'epoch', epoch)
return epoch`)

// BenchmarkAdmissionDrain: one worker admits 20,000 queued tickets into free slots
// (grant, sign, publish the link), next to the bare Lua acquire run sequentially on
// the same Redis in the same run.
func BenchmarkAdmissionDrain(b *testing.B) {
	const n = 20_000
	e := newAdmissionBench(b, n, queue.StreamConfig{})
	ctx := b.Context()
	for b.Loop() {
		if err := e.rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		if _, err := e.ledger.Rebuild(ctx); err != nil {
			b.Fatal(err)
		}
		if err := e.ledger.SetPaused(ctx, true); err != nil {
			b.Fatal(err)
		}
		for i := range n {
			t := benchTicket(i, "t"+strconv.Itoa(i%10))
			t.Seq = uint64(i + 1)
			if _, err := e.ledger.Enqueue(ctx, t.Ledger()); err != nil {
				b.Fatal(err)
			}
		}
		var admitted atomic.Int64
		all := make(chan struct{})
		e.ready = func(ids []string) {
			if admitted.Add(int64(len(ids))) == n {
				close(all)
			}
		}
		_, stop := e.startWorker(b, workers.AdmissionConfig{})
		time.Sleep(time.Second) // the worker is running: its wake-up subscription is live
		e.rdb.ConfigResetStat(ctx)
		redis0, self0 := cpuTime(e.redis.Cmd.Process.Pid), cpuTime(os.Getpid())
		start := time.Now()
		if err := e.ledger.SetPaused(ctx, false); err != nil {
			b.Fatal(err)
		}
		select {
		case <-all:
		case <-time.After(2 * time.Minute):
			b.Fatalf("%d of %d tickets admitted within 2 minutes", admitted.Load(), n)
		}
		drain := float64(n) / time.Since(start).Seconds()
		redisCPU, selfCPU := cpuTime(e.redis.Cmd.Process.Pid)-redis0, cpuTime(os.Getpid())-self0
		stop()
		if os.Getenv("SLUICE_BENCH_VERBOSE") != "" {
			fmt.Fprintln(os.Stderr, e.rdb.Info(ctx, "commandstats").Val())
		}

		start = time.Now()
		lease := time.Now().Add(time.Minute).UnixMilli()
		for i := range n {
			if err := acquireLua.Run(ctx, e.rdb, []string{"peer:{p}:"}, "p"+strconv.Itoa(i), lease).Err(); err != nil {
				b.Fatal(err)
			}
		}
		peer := float64(n) / time.Since(start).Seconds()
		b.ReportMetric(drain, "drain-tickets/s")
		b.ReportMetric(peer, "peer-acquires/s")
		b.ReportMetric(drain/peer, "ratio-to-peer")
		b.ReportMetric(float64(redisCPU.Microseconds())/n, "redis-us/ticket")
		b.ReportMetric(float64(selfCPU.Microseconds())/n, "worker-us/ticket")
		fmt.Fprintf(os.Stderr, "\nadmission drain, one worker, %d queued tickets in 10 tenants, free slots:\n"+
			"  worker (grant, sign, publish the link)  %8.0f tickets/s (CPU per ticket: redis %.0f µs, worker and NATS %.0f µs)\n"+
			"  bare Lua acquire, sequential            %8.0f /s\n  ratio %.2f\n",
			n, drain, float64(redisCPU.Microseconds())/n, float64(selfCPU.Microseconds())/n, peer, drain/peer)
	}
}

// BenchmarkAdmissionLatency: at low load (one ticket every 10 ms, free slots), the
// time from a ticket being queued in the ledger (the ingress' enqueue, after the
// PubAck) to its link being published, next to three sequential script round trips
// (what queue, grant and publish cost with nothing in between) in the same run.
func BenchmarkAdmissionLatency(b *testing.B) {
	const n = 300
	e := newAdmissionBench(b, 1000, queue.StreamConfig{})
	ctx := b.Context()
	var mu sync.Mutex
	queued := map[string]time.Time{}
	var lat []time.Duration
	e.ready = func(ids []string) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if t, ok := queued[id]; ok {
				lat = append(lat, now.Sub(t))
				delete(queued, id)
			}
		}
	}
	e.startWorker(b, workers.AdmissionConfig{})
	time.Sleep(time.Second) // the worker's wake-up subscription is live
	seq := 0
	for b.Loop() {
		mu.Lock()
		lat = lat[:0]
		mu.Unlock()
		for range n {
			seq++
			t := benchTicket(seq, "public")
			s, err := e.pub.Publish(ctx, t)
			if err != nil {
				b.Fatal(err)
			}
			t.Seq = s
			mu.Lock()
			queued[t.ID] = time.Now()
			mu.Unlock()
			if _, err := e.ledger.Enqueue(ctx, t.Ledger()); err != nil {
				b.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			// Tickets end, as downloads do, so that the limit never fills.
			if _, err := e.ledger.Cancel(ctx, t.ID); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		got := append([]time.Duration(nil), lat...)
		mu.Unlock()
		if len(got) < n*9/10 {
			b.Fatalf("only %d of %d tickets were published ready", len(got), n)
		}
		sortDurations(got)

		peer := make([]time.Duration, n)
		lease := time.Now().Add(time.Minute).UnixMilli()
		for i := range peer {
			start := time.Now()
			for range 3 {
				if err := acquireLua.Run(ctx, e.rdb, []string{"peer:{p}:"}, "p"+strconv.Itoa(i), lease).Err(); err != nil {
					b.Fatal(err)
				}
			}
			peer[i] = time.Since(start)
		}
		sortDurations(peer)
		p50, p99 := percentile(got, 50), percentile(got, 99)
		b.ReportMetric(ms(p50), "p50-ms")
		b.ReportMetric(ms(p99), "p99-ms")
		b.ReportMetric(ms(percentile(peer, 50)), "peer-p50-ms")
		b.ReportMetric(ms(percentile(peer, 99)), "peer-p99-ms")
		fmt.Fprintf(os.Stderr, "\nqueue -> ready at low load (%d tickets, one every 10 ms, free slots):\n"+
			"  worker, event-driven          p50 %6.2f ms  p99 %6.2f ms\n  three sequential script calls p50 %6.2f ms  p99 %6.2f ms\n",
			n, ms(p50), ms(p99), ms(percentile(peer, 50)), ms(percentile(peer, 99)))
	}
}

// BenchmarkAdmissionIdleBacklog: 100,000 tickets queued across 1,000 tenants (global
// limit 100,000, admission paused so that they stay queued), all held by one worker:
// the CPU that Redis, NATS and the worker spend over 30 s while nothing happens, and
// the worker's memory per waiting ticket. The window is made to hold the costs that
// the defaults spread wider: every held message is renewed once in it (AckWait 90 s,
// renewed at a third) where the default --ticket-ack-wait of 10 minutes renews a
// ticket every 200 s, and every held ticket is reconciled once (ReconcileEvery 30 s,
// default 5 minutes).
func BenchmarkAdmissionIdleBacklog(b *testing.B) {
	n, tenants := 100_000, 1_000
	if s := os.Getenv("SLUICE_BENCH_BACKLOG"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	// The accelerated window (see above), or with SLUICE_BENCH_IDLE_DEFAULTS=1 the
	// defaults themselves: --ticket-ack-wait 10 minutes (each held message renewed
	// every 200 s) and a reconciliation every 5 minutes, over 10 minutes: three
	// renewals of each message and two reconciliations, as many as the defaults make
	// in any 10 minutes.
	window, ackWait, reconcile := 30*time.Second, 90*time.Second, 30*time.Second
	if os.Getenv("SLUICE_BENCH_IDLE_DEFAULTS") == "1" {
		window, ackWait, reconcile = 10*time.Minute, 10*time.Minute, 5*time.Minute
	}
	// NATS in a process of its own, so that the benchmark process's memory and CPU are
	// the worker's alone
	nats := testenv.StartNATSProcess(b, testenv.NATSProcessOptions{})
	e := newAdmissionBenchOn(b, testenv.JetStreamAt(b, nats.URL), n, queue.StreamConfig{AckWait: ackWait, MaxMsgs: int64(2 * n)})
	ctx := b.Context()
	for b.Loop() {
		if err := e.ledger.SetPaused(ctx, true); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					t := benchTicket(i, "tenant-"+strconv.Itoa(i%tenants))
					s, err := e.pub.Publish(ctx, t)
					if err != nil {
						b.Error(err)
						return
					}
					t.Seq = s
					if _, err := e.ledger.Enqueue(ctx, t.Ledger()); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		built := time.Since(start)
		heapBefore, rssBefore, natsBefore := heapInUse(), rss(os.Getpid()), rss(nats.Cmd.Process.Pid)
		w, stop := e.startWorker(b, workers.AdmissionConfig{ReconcileEvery: reconcile})
		deadline := time.Now().Add(5 * time.Minute)
		for w.Held() < n {
			if time.Now().After(deadline) {
				b.Fatalf("the worker holds %d of %d tickets after 5 minutes", w.Held(), n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		held := time.Since(start) - built
		heapAfter, rssAfter, natsAfter := heapInUse(), rss(os.Getpid()), rss(nats.Cmd.Process.Pid)
		time.Sleep(2 * time.Second) // the worker's first sweep (a reconciliation) is done

		redisPID, natsPID := e.redis.Cmd.Process.Pid, nats.Cmd.Process.Pid
		r0, n0, s0 := cpuTime(redisPID), cpuTime(natsPID), cpuTime(os.Getpid())
		time.Sleep(window)
		redisCPU, natsCPU, selfCPU := cpuTime(redisPID)-r0, cpuTime(natsPID)-n0, cpuTime(os.Getpid())-s0
		if h := w.Held(); h != n {
			b.Errorf("the worker holds %d tickets after the idle window, want %d", h, n)
		}
		stop()

		perCore := func(d time.Duration) float64 { return d.Seconds() / window.Seconds() }
		cores := perCore(redisCPU + natsCPU + selfCPU)
		perHeap := float64(heapAfter-heapBefore) / float64(n)
		perRSS := float64(rssAfter-rssBefore) / float64(n)
		perNATS := float64(natsAfter-natsBefore) / float64(n)
		b.ReportMetric(cores, "idle-cores")
		b.ReportMetric(perCore(redisCPU), "redis-cores")
		b.ReportMetric(perCore(natsCPU), "nats-cores")
		b.ReportMetric(perCore(selfCPU), "worker-cores")
		b.ReportMetric(perHeap, "heap-B/ticket")
		b.ReportMetric(perRSS, "rss-B/ticket")
		b.ReportMetric(perNATS, "nats-rss-B/ticket")
		fmt.Fprintf(os.Stderr, "\nidle backlog: %d queued tickets across %d tenants, held by one worker (built in %s, held %s later):\n"+
			"  CPU over %s: redis %.4f cores, nats-server %.4f cores, worker %.4f cores, together %.4f cores\n"+
			"  memory per waiting ticket: worker heap %.0f B, worker RSS %.0f B; nats-server RSS %.0f B (its pending state for the delivered message)\n",
			n, tenants, built.Round(time.Second), held.Round(time.Second), window, perCore(redisCPU), perCore(natsCPU),
			perCore(selfCPU), cores, perHeap, perRSS, perNATS)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// rss is a process's resident set, from /proc.
func rss(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime is a process's user and system CPU time, from /proc (clock ticks of 10 ms).
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
