package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
// apart from noise the timings of BenchmarkScaleBacklog cannot. Skipped without
// valgrind (Debian: apt-get install valgrind).
func BenchmarkPollInstructions(b *testing.B) {
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		b.Skip("valgrind is not installed (apt-get install valgrind): it counts redis-server's instructions")
	}
	control, err := exec.LookPath("callgrind_control")
	if err != nil {
		b.Skip("callgrind_control (valgrind's package) is not installed")
	}
	server := testenv.Binary(b, "redis-server", "SLUICE_REDIS_SERVER_BIN", "apt-get install redis-server")
	dir := b.TempDir()
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
	cfg := admission.Config{GlobalLimit: 100_000, OrderMaxAge: time.Hour} // the order built once
	if cfg.Records, err = queue.EnsureRecords(b.Context(), testenv.StartNATS(b).JetStream(b), queue.RecordConfig{Bucket: queue.SettingsBucket}); err != nil {
		b.Fatal(err)
	}
	l := admission.New(rdb, cfg)
	if _, err := l.Rebuild(b.Context()); err != nil {
		b.Fatal(err)
	}
	const queued, tenants, calls = 2000, 200, 300
	ids := buildBacklog(b, l, queued, tenants)
	pick := func(i int) string { return ids[(i*7919)%len(ids)] }
	if _, err := l.Poll(b.Context(), pick(0)); err != nil { // builds the order
		b.Fatal(err)
	}
	summary := regexp.MustCompile(`(?m)^summary: (\d+)`)
	// count runs fn calls times between two dumps of callgrind's counters and returns
	// the instructions per call (redis-server's, whole: network, parsing and script)
	dumps := 0
	count := func(fn func(i int) error) float64 {
		dump := func() string {
			dumps++
			if out, err := exec.Command(control, "--dump", strconv.Itoa(cmd.Process.Pid)).CombinedOutput(); err != nil {
				b.Fatalf("callgrind_control: %v %s", err, out)
			}
			return filepath.Join(dir, "callgrind.out."+strconv.Itoa(dumps))
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
		m := summary.FindSubmatch(raw)
		if m == nil {
			b.Fatal("no summary in callgrind's dump")
		}
		n, _ := strconv.ParseFloat(string(m[1]), 64)
		return n / calls
	}
	for b.Loop() {
		var poll, hgetall float64
		for round := range 3 {
			p := count(func(i int) error { _, err := l.Poll(b.Context(), pick(i)); return err })
			h := count(func(i int) error { return readTicketHash(b, rdb, pick(i)) })
			fmt.Printf("round %d: ledger poll %7.0f instructions, HGETALL script %7.0f: %.2f×\n", round+1, p, h, p/h)
			poll, hgetall = p, h
		}
		b.ReportMetric(poll, "poll-instructions")
		b.ReportMetric(hgetall, "peer-instructions")
	}
}
