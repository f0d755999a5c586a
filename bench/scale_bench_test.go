package bench

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/queue"
)

// BenchmarkScaleBacklog builds a backlog of queued tickets across 1,000 tenants in the
// real ledger (Redis, through Ledger.Enqueue, global limit 100,000, no worker: nothing
// is admitted) at two sizes, so that 1,000,000 is extrapolated from measurements. It
// measures, one request at a time:
//   - GET /api/v1/tickets/{id} through a real `sluice ingress`: client p50/p99 and
//     Redis's time per GET (INFO commandstats over the run: the GET's one script);
//   - the ledger's poll alone, with the position from the shared order (as shipped;
//     "no-build": without its rebuild once a second) and counted tenant by tenant
//     ("exact": what every poll did before);
//   - a peer: a script that only reads the ticket hash (the floor of any poll);
//   - the admin stats: computed (Stats) and shared (SharedStats, as the endpoint).
func BenchmarkScaleBacklog(b *testing.B) {
	const tenants = 1000
	sizes := []int{10_000, 100_000}
	// Redis µs per call and client p99 µs, by what was measured, at each size
	type figures struct{ redis, p99 []float64 }
	got := map[string]*figures{}
	var names []string
	for _, size := range sizes {
		b.Run(fmt.Sprintf("tickets=%d", size), func(b *testing.B) {
			rs := testenv.StartRedis(b)
			rdb := rs.Client(b)
			nats := testenv.StartNATS(b)
			cfg := admission.Config{GlobalLimit: 100_000}
			var err error
			if cfg.Records, err = queue.EnsureRecords(b.Context(), nats.JetStream(b), queue.RecordConfig{Bucket: queue.SettingsBucket}); err != nil {
				b.Fatal(err)
			}
			l := admission.New(rdb, cfg)
			if _, err := l.Rebuild(b.Context()); err != nil {
				b.Fatal(err)
			}
			ids := buildBacklog(b, l, size, tenants)
			ingress := startIngress(b, nats.URL, rs.URL)
			report := func(name string, n int, fn func(i int) error) {
				p50, p99, script := measure(b, rdb, n, fn)
				fmt.Printf("%7d tickets, %d tenants, %-14s p50 %8s  p99 %8s  Redis %7.1f µs per call\n",
					size, tenants, name+":", p50.Round(time.Microsecond), p99.Round(time.Microsecond), script)
				f := got[name]
				if f == nil {
					f = &figures{}
					got[name] = f
					names = append(names, name)
				}
				f.redis = append(f.redis, script)
				f.p99 = append(f.p99, float64(p99.Microseconds()))
				b.ReportMetric(script, name+"-redis-µs")
				b.ReportMetric(float64(p99.Microseconds()), name+"-p99-µs")
			}
			pick := func(i int) string { return ids[(i*7919)%len(ids)] }
			httpc := &http.Client{}
			get := func(id string) error {
				res, err := httpc.Get(ingress + "/api/v1/tickets/" + id)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					return fmt.Errorf("GET ticket: %s", res.Status)
				}
				return nil
			}
			report("GET", 3000, func(i int) error { return get(pick(i)) })
			report("poll", 3000, func(i int) error { _, err := l.Poll(b.Context(), pick(i)); return err })
			fixedCfg := l.Config()
			fixedCfg.OrderMaxAge = time.Hour
			fixed := admission.New(rdb, fixedCfg)
			report("poll-no-build", 3000, func(i int) error { _, err := fixed.Poll(b.Context(), pick(i)); return err })
			exactCfg := l.Config()
			exactCfg.ExactTenants = 1 << 30
			exact := admission.New(rdb, exactCfg)
			report("poll-exact", 500, func(i int) error { _, err := exact.Poll(b.Context(), pick(i)); return err })
			report("peer-hgetall", 3000, func(i int) error {
				return readTicketHash(b, rdb, pick(i))
			})
			report("stats", 100, func(int) error { _, err := l.Stats(b.Context()); return err })
			report("stats-shared", 3000, func(int) error { _, err := l.SharedStats(b.Context()); return err })

			// The same polls with every slot of a 1,000-slot fleet held (links
			// published, a few released so that waits are estimated): the estimate then
			// reads when the holders were admitted.
			queued := holdSlots(b, l, ids, 1000)
			pickQueued := func(i int) string { return queued[(i*7919)%len(queued)] }
			report("GET-1k-held", 3000, func(i int) error { return get(pickQueued(i)) })
			report("poll-1k-held", 3000, func(i int) error {
				p, err := l.Poll(b.Context(), pickQueued(i))
				if err == nil && (!p.ETAKnown || p.Ticket.Status != admission.StatusQueued) {
					err = fmt.Errorf("ticket %s: %s, wait known %v: the holders' phase is not what it should measure", p.Ticket.ID, p.Ticket.Status, p.ETAKnown)
				}
				return err
			})
		})
	}
	// 1,000,000 queued, by the line through the two sizes (the cost is taken to grow at
	// most linearly with the backlog; a falling line is taken as flat)
	const target = 1_000_000
	for _, name := range names {
		f := got[name]
		if len(f.redis) != len(sizes) {
			continue
		}
		at := func(v []float64) float64 {
			slope := max((v[1]-v[0])/float64(sizes[1]-sizes[0]), 0)
			return v[1] + slope*float64(target-sizes[1])
		}
		fmt.Printf("%7d tickets (extrapolated), %-14s Redis %7.1f µs per call, p99 %7.0f µs\n", target, name+":", at(f.redis), at(f.p99))
	}
}

// hgetallPeer only reads a ticket's hash: the floor of any poll, the peer of the poll
// benchmarks.
var hgetallPeer = redis.NewScript(`return redis.call('HGETALL', KEYS[1])`)

// readTicketHash runs hgetallPeer on ticket id of the ledger under the default prefix.
func readTicketHash(b *testing.B, rdb *redis.Client, id string) error {
	return hgetallPeer.Run(b.Context(), rdb, []string{"sluice:{adm}:t:" + id}).Err()
}

// startIngress runs `sluice ingress` alone (no worker admits anything) over the
// given NATS and Redis, and returns its URL.
func startIngress(b *testing.B, natsURL, redisURL string) string {
	b.Helper()
	port := testenv.FreePort(b)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	key := base64.StdEncoding.EncodeToString([]byte("bench-signing-key-0123456789abcdef"))
	p := testenv.Start(b, b.TempDir(), sluiceBin, []string{
		"SLUICE_NATS_URL=" + natsURL,
		"SLUICE_REDIS_URL=" + redisURL,
		"SLUICE_DATA_DIR=" + b.TempDir(),
		"SLUICE_SIGNING_KEYS=k1:" + key,
		"SLUICE_INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(port),
		"SLUICE_PUBLIC_EDGE_URL=http://127.0.0.1:1",
		"SLUICE_METRICS_ADDR=127.0.0.1:0",
		"SLUICE_GLOBAL_LIMIT=100000",
		"SLUICE_TICKET_RATE=0",
		"SLUICE_LOG_LEVEL=warn",
	}, "ingress")
	testenv.WaitHTTP(b, url+"/readyz", 30*time.Second, p.Log)
	return url
}

// holdSlots lowers the global limit to slots and fills them: it admits slots+10
// queued tickets, cancels ten (the releases wait estimates are made from) and publishes
// the others' links for an hour. It returns the ids still queued.
func holdSlots(b *testing.B, l *admission.Ledger, ids []string, slots int) []string {
	b.Helper()
	ctx := b.Context()
	var grants []admission.Grant
	for len(grants) < slots+10 {
		g, err := l.Admit(ctx, slots+10-len(grants))
		if err != nil {
			b.Fatal(err)
		}
		if len(g) == 0 {
			b.Fatalf("admitted %d of %d tickets, then nothing", len(grants), slots+10)
		}
		grants = append(grants, g...)
	}
	for _, g := range grants[:10] {
		if _, err := l.Cancel(ctx, g.Ticket.ID); err != nil {
			b.Fatal(err)
		}
	}
	var links []admission.Link
	for _, g := range grants[10:] {
		links = append(links, admission.Link{Grant: g, URL: "http://127.0.0.1:1/d/" + g.Ticket.ID, Expires: time.Now().Add(time.Hour)})
	}
	errs, err := l.Ready(ctx, links)
	if err != nil {
		b.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.SetLimits(ctx, admission.LimitsUpdate{Global: &slots}); err != nil {
		b.Fatal(err)
	}
	granted := make(map[string]bool, len(grants))
	for _, g := range grants {
		granted[g.Ticket.ID] = true
	}
	st, err := l.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("%d slots held of a global limit of %d, %d queued\n", st.InUse, slots, st.Backlog)
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return granted[id] })
}

// buildBacklog enqueues n anonymous tickets spread round-robin over the tenants, 32
// at a time, through the ledger's own Enqueue: the real data structure.
func buildBacklog(b *testing.B, l *admission.Ledger, n, tenants int) []string {
	b.Helper()
	start := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				ids[i] = benchTicketID(i)
				if _, err := l.Enqueue(b.Context(), admission.Ticket{ID: ids[i], Object: "o", ETag: "e", Size: 1,
					Tenant: fmt.Sprintf("t%04d", i%tenants), Seq: uint64(i + 1), Created: time.Now()}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	fmt.Printf("built a backlog of %d tickets over %d tenants in %s\n", n, tenants, time.Since(start).Round(time.Millisecond))
	return ids
}

// measure runs fn n times, one at a time, and returns the client's p50 and p99 and
// Redis's time per call of fn in scripts (EVALSHA/EVAL, INFO commandstats over the
// run: a script's time includes the commands it runs; commands of other clients of
// the same Redis count too, so it is an upper bound). It logs the commands run per
// call, inside the scripts or not: where a call's Redis time goes.
func measure(b *testing.B, rdb *redis.Client, n int, fn func(i int) error) (p50, p99 time.Duration, script float64) {
	b.Helper()
	if err := rdb.ConfigResetStat(b.Context()).Err(); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := fn(i); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	line, script := commandStats(b, rdb, n)
	fmt.Printf("    per call: %s\n", line)
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], script
}

// commandStats reads Redis's INFO commandstats since the last CONFIG RESETSTAT and
// returns, per one of n operations, the commands run (inside scripts or not) by
// time, and the time of the scripts themselves (FCALL, EVALSHA or EVAL, their
// commands included) in microseconds.
func commandStats(b *testing.B, rdb *redis.Client, n int) (line string, scriptUsec float64) {
	b.Helper()
	type cmd struct {
		name         string
		calls, usecs float64
	}
	var cmds []cmd
	for name, st := range testenv.CommandStats(b, rdb) {
		switch name {
		case "config", "info":
			continue // the measurement's own
		case "fcall", "evalsha", "eval":
			scriptUsec += st.Usec
		}
		cmds = append(cmds, cmd{name, st.Calls / float64(n), st.Usec / float64(n)})
	}
	slices.SortFunc(cmds, func(a, b cmd) int { return cmp.Compare(b.usecs, a.usecs) })
	var parts []string
	for _, c := range cmds {
		if c.usecs >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f× %.1fµs", c.name, c.calls, c.usecs))
		}
	}
	return strings.Join(parts, ", "), scriptUsec / float64(n)
}

// benchTicketID is the i-th ticket id in the form the API accepts (t + 26 base32).
func benchTicketID(i int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	id := []byte("taaaaaaaaaaaaaaaaaaaaaaaaaa")
	for j := len(id) - 1; i > 0; j-- {
		id[j] = alphabet[i%32]
		i /= 32
	}
	return string(id)
}
