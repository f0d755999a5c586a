package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
)

// BenchmarkPollInstructions counts the instructions redis-server executes per ledger
// poll of a queued ticket (Ledger.Poll, as a client's GET makes it: 2,000 queued over
// 200 tenants, the shared order built), next to a script that only reads the ticket
// hash, with redis-server run under valgrind's callgrind. Unlike time, the count does
// not depend on what else the machine is doing, so it tells a change to the poll
// apart from noise the timings of BenchmarkScaleBacklog cannot. Then the same behind
// 100 held slots, where a poll also estimates its wait. Skipped without
// valgrind (Debian: apt-get install valgrind).
func BenchmarkPollInstructions(b *testing.B) {
	r := startCountedRedis(b)
	l := r.ledger(b, admission.Config{GlobalLimit: 100_000, OrderMaxAge: time.Hour}) // the order built once
	const queued, tenants, calls = 2000, 200, 300
	ids := buildBacklog(b, l, queued, tenants)
	pick := func(i int) string { return ids[(i*7919)%len(ids)] }
	if _, err := l.Poll(b.Context(), pick(0)); err != nil { // builds the order
		b.Fatal(err)
	}
	for b.Loop() {
		var poll, hgetall float64
		for round := range 3 {
			p := r.count(b, calls, func(i int) error { _, err := l.Poll(b.Context(), pick(i)); return err })
			h := r.count(b, calls, func(i int) error { return readTicketHash(b, r.rdb, pick(i)) })
			fmt.Printf("round %d: ledger poll %7.0f instructions, HGETALL script %7.0f: %.2f×\n", round+1, p, h, p/h)
			poll, hgetall = p, h
		}
		b.ReportMetric(poll, "poll-instructions")
		b.ReportMetric(hgetall, "peer-instructions")

		// Then behind 100 held slots, with the mean hold known: each poll also
		// estimates its wait from the holders (estimate_wait).
		queued := holdSlots(b, l, ids, 100)
		pickQueued := func(i int) string { return queued[(i*7919)%len(queued)] }
		var held float64
		for round := range 3 {
			held = r.count(b, calls, func(i int) error { _, err := l.Poll(b.Context(), pickQueued(i)); return err })
			h := r.count(b, calls, func(i int) error { return readTicketHash(b, r.rdb, pickQueued(i)) })
			fmt.Printf("round %d, 100 slots held: ledger poll %7.0f instructions, HGETALL script %7.0f: %.2f×\n", round+1, held, h, held/h)
		}
		b.ReportMetric(held, "poll-held-instructions")
	}
}

// BenchmarkAcceptInstructions counts the instructions redis-server executes per
// ticket the ingress records (Ledger.Accept: the ticket written, queued and its
// place in line answered), one request at a time and 64 at once (the ingress under
// load: the calls share a round trip), behind a full fleet (10 slots held, 2,000
// tickets queued over 200 tenants), next to the same HGETALL script as
// BenchmarkPollInstructions. Skipped without valgrind.
func BenchmarkAcceptInstructions(b *testing.B) {
	r := startCountedRedis(b)
	const queued, tenants, calls, together = 2000, 200, 320, 64
	l := r.ledger(b, admission.Config{GlobalLimit: 10, OrderMaxAge: time.Hour})
	buildBacklog(b, l, queued, tenants)
	if grants, err := l.Admit(b.Context(), 10); err != nil || len(grants) != 10 {
		b.Fatalf("fill the fleet: %d grants, %v", len(grants), err)
	}
	next := queued
	ticket := func() admission.Ticket {
		next++
		return admission.Ticket{ID: benchTicketID(next), Object: "o", ETag: "e", Size: 1,
			Tenant: fmt.Sprintf("t%04d", next%tenants), Seq: uint64(next), Created: time.Now()}
	}
	accept := func(t admission.Ticket) error {
		p, err := l.Accept(b.Context(), t)
		if err == nil && p.Status != admission.StatusQueued {
			err = fmt.Errorf("ticket %s is %s, not queued", t.ID, p.Status)
		}
		return err
	}
	for b.Loop() {
		var alone, shared, hgetall float64
		for round := range 3 {
			alone = r.count(b, calls, func(int) error { return accept(ticket()) })
			shared = r.count(b, calls/together, func(int) error {
				batch := make([]admission.Ticket, together)
				for i := range batch {
					batch[i] = ticket()
				}
				var wg sync.WaitGroup
				errs := make([]error, together)
				for i, t := range batch {
					wg.Go(func() { errs[i] = accept(t) })
				}
				wg.Wait()
				return errors.Join(errs...)
			}) / together
			hgetall = r.count(b, calls, func(i int) error { return readTicketHash(b, r.rdb, benchTicketID(i+1)) })
			fmt.Printf("round %d: per ticket accepted alone %7.0f instructions, %d at once %7.0f; HGETALL script %7.0f: %.2f× and %.2f×\n",
				round+1, alone, together, shared, hgetall, alone/hgetall, shared/hgetall)
		}
		b.ReportMetric(alone, "accept-instructions")
		b.ReportMetric(shared, "accept-64-instructions")
		b.ReportMetric(hgetall, "peer-instructions")
	}
}

// countedRedis is a redis-server run under valgrind's callgrind, whose instructions
// count can be read between any two points.
type countedRedis struct {
	rdb     *redis.Client
	control string // callgrind_control
	pid     int
	dir     string
	dumps   int
}

// startCountedRedis starts redis-server under callgrind on a random port, or skips
// the benchmark without valgrind (Debian: apt-get install valgrind).
func startCountedRedis(b *testing.B) *countedRedis {
	b.Helper()
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		b.Skip("valgrind is not installed (apt-get install valgrind): it counts redis-server's instructions")
	}
	control, err := exec.LookPath("callgrind_control")
	if err != nil {
		b.Skip("callgrind_control (valgrind's package) is not installed")
	}
	server := testenv.Binary(b, "redis-server", "SLUICE_REDIS_SERVER_BIN", "apt-get install redis-server")
	// SLUICE_BENCH_CALLGRIND_DIR keeps the dumps (callgrind.out.N, one per count's
	// start and end) for callgrind_annotate: which of redis-server's functions ran.
	dir := os.Getenv("SLUICE_BENCH_CALLGRIND_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	port := testenv.FreePort(b)
	cmd := exec.Command(valgrind, "--tool=callgrind", "--callgrind-out-file="+filepath.Join(dir, "callgrind.out"),
		server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--hz", "1")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	b.Cleanup(func() { rdb.Close() })
	for start := time.Now(); rdb.Ping(b.Context()).Err() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			b.Fatal("redis-server under valgrind did not answer within a minute")
		}
	}
	return &countedRedis{rdb: rdb, control: control, pid: cmd.Process.Pid, dir: dir}
}

// ledger returns a rebuilt ledger on the counted Redis, with its limits' records in
// an in-process NATS.
func (r *countedRedis) ledger(b *testing.B, cfg admission.Config) *admission.Ledger {
	b.Helper()
	var err error
	if cfg.Records, err = queue.EnsureRecords(b.Context(), testenv.StartNATS(b).JetStream(b), queue.RecordConfig{Bucket: queue.SettingsBucket}); err != nil {
		b.Fatal(err)
	}
	l := admission.New(r.rdb, cfg)
	if _, err := l.Rebuild(b.Context()); err != nil {
		b.Fatal(err)
	}
	return l
}

var callgrindSummary = regexp.MustCompile(`(?m)^summary: (\d+)`)

// count runs fn calls times between two dumps of callgrind's counters and returns
// the instructions per call (redis-server's, whole: network, parsing and script).
func (r *countedRedis) count(b *testing.B, calls int, fn func(i int) error) float64 {
	b.Helper()
	dump := func() string {
		r.dumps++
		if out, err := exec.Command(r.control, "--dump", strconv.Itoa(r.pid)).CombinedOutput(); err != nil {
			b.Fatalf("callgrind_control: %v %s", err, out)
		}
		return filepath.Join(r.dir, "callgrind.out."+strconv.Itoa(r.dumps))
	}
	dump()
	for i := range calls {
		if err := fn(i); err != nil {
			b.Fatal(err)
		}
	}
	raw, err := os.ReadFile(dump())
	if err != nil {
		b.Fatal(err)
	}
	m := callgrindSummary.FindSubmatch(raw)
	if m == nil {
		b.Fatal("no summary in callgrind's dump")
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	return n / float64(calls)
}
