package bench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
)

const (
	acceptRequests    = 20_000
	acceptConcurrency = 64
)

// load POSTs body to url from `concurrency` clients until n requests are done and
// returns the rate and the latencies, sorted.
func load(b *testing.B, url string, body []byte, n, concurrency int, want int) (float64, []time.Duration) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}, Timeout: 10 * time.Second}
	lat := make([]time.Duration, n)
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d requests to %s failed or did not answer %d", f, n, url, want)
	}
	sortDurations(lat)
	return float64(n) / elapsed.Seconds(), lat
}

// BenchmarkTicketAccept measures POST /api/v1/downloads (validate, check the catalog,
// stat, publish to JetStream and await the PubAck, record in Redis) under 64
// concurrent clients, next to two peers in the same run: a bare Gin handler that binds
// the same JSON and answers 202 (the floor any Gin service pays), and the same handler
// publishing one message to JetStream per request and awaiting its PubAck on the same
// NATS server (SyncAlways): the durable per-message design that sluice's accept path
// has to beat. NATS and Redis run as processes of their own, so that the CPU time of
// each process is read apart (/proc/<pid>/stat) and summed per ticket.
//
// SLUICE_BENCH_PROFILE=<file> also writes a CPU profile of the serve process during
// its run (from /debug/pprof on its operations port), for `go tool pprof -top`, and
// <file>.goroutine: where its goroutines wait one second into the run.
func BenchmarkTicketAccept(b *testing.B) { benchmarkTicketAccept(b, true) }

// BenchmarkTicketAcceptNoSync is the same with JetStream not syncing every message
// (nats-server's default: acknowledged once written), sluice and peer alike: what
// is left when the disk is not the bound.
func BenchmarkTicketAcceptNoSync(b *testing.B) { benchmarkTicketAccept(b, false) }

func benchmarkTicketAccept(b *testing.B, syncAlways bool) {
	nats := testenv.StartNATSProcess(b, testenv.NATSProcessOptions{SyncAlways: syncAlways, Profile: os.Getenv("SLUICE_BENCH_PROFILE") != ""})
	opsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(b))
	// what an operator sets for each server (README, --publish-batches): atomic
	// batches where every message is synced, pipelined publishes where it is not
	batches := "off"
	if syncAlways {
		batches = "on"
	}
	s := startServerOn(b, nats.URL, false, "SLUICE_PPROF=true", "SLUICE_EDGE_METRICS_ADDR="+opsAddr, "SLUICE_PUBLISH_BATCHES="+batches)
	obj := filepath.Join(s.dataDir, "objects", "bench", "small.bin")
	os.MkdirAll(filepath.Dir(obj), 0o755)
	os.WriteFile(obj, []byte("x"), 0o644)
	body := []byte(`{"object":"bench/small.bin"}`)

	nc, err := natsgo.Connect(s.natsURL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(b.Context(), jetstream.StreamConfig{Name: "PEER", Subjects: []string{"peer.>"},
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy}); err != nil {
		b.Fatal(err)
	}

	r := gin.New()
	bind := func(c *gin.Context) (string, bool) {
		var req struct {
			Object string `json:"object"`
		}
		if c.ShouldBindJSON(&req) != nil {
			c.Status(http.StatusBadRequest)
			return "", false
		}
		return req.Object, true
	}
	r.POST("/bare", func(c *gin.Context) {
		if obj, ok := bind(c); ok {
			c.JSON(http.StatusAccepted, gin.H{"object": obj, "status": "queued"})
		}
	})
	var n atomic.Int64
	r.POST("/durable", func(c *gin.Context) {
		obj, ok := bind(c)
		if !ok {
			return
		}
		id := fmt.Sprint(n.Add(1))
		msg := &natsgo.Msg{Subject: "peer.t." + id, Data: []byte(`{"object":"` + obj + `","id":"` + id + `"}`), Header: natsgo.Header{}}
		if _, err := js.PublishMsg(c, msg, jetstream.WithMsgID(id)); err != nil {
			c.Status(http.StatusServiceUnavailable)
			return
		}
		c.JSON(http.StatusAccepted, gin.H{"id": id, "object": obj, "status": "queued"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	peer := &http.Server{Handler: r}
	go peer.Serve(ln)
	defer peer.Close()
	peerURL := "http://" + ln.Addr().String()

	self := os.Getpid()
	procs := map[string]int{"serve": s.proc.Cmd.Process.Pid, "redis": s.redis.Cmd.Process.Pid, "nats": nats.Cmd.Process.Pid, "bench": self}
	mode := "JetStream SyncAlways"
	if !syncAlways {
		mode = "JetStream without a sync per message"
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer rdb.Close()
	for b.Loop() {
		bareRate, bareLat := load(b, peerURL+"/bare", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		before := cpuTimes(b, procs)
		durRate, durLat := load(b, peerURL+"/durable", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		peerCPU := since(b, procs, before)
		profile := startProfile(b, "http://"+opsAddr, nats.ProfileURL)
		before = cpuTimes(b, procs)
		callsBefore := ioCalls(b, procs)
		if err := rdb.ConfigResetStat(b.Context()).Err(); err != nil {
			b.Fatal(err)
		}
		rate, lat := load(b, s.ingress+"/api/v1/downloads", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		cpu := since(b, procs, before)
		calls := ioCalls(b, procs)
		profile()
		redisCmds, _ := commandStats(b, rdb, acceptRequests)
		perCalls := func(name string) float64 { return float64(calls[name]-callsBefore[name]) / acceptRequests }

		per := func(d time.Duration) float64 { return ms(d) / acceptRequests }
		sluiceCPU := per(cpu["serve"] + cpu["redis"] + cpu["nats"])
		// The peer's handler runs in this process next to the load generator: the
		// generator's own cost is this process's CPU per request in sluice's run.
		peerPer := per(peerCPU["nats"]) + per(peerCPU["bench"]) - per(cpu["bench"])
		b.ReportMetric(rate, "tickets/s")
		b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
		b.ReportMetric(bareRate, "bare-gin-req/s")
		b.ReportMetric(durRate, "durable-peer-req/s")
		b.ReportMetric(rate/durRate, "ratio-to-durable-peer")
		b.ReportMetric(sluiceCPU, "cpu-ms/ticket")
		b.ReportMetric(peerPer, "peer-cpu-ms/req")
		b.ReportMetric(perCalls("serve")+perCalls("redis")+perCalls("nats"), "io-calls/ticket")
		fmt.Fprintf(os.Stderr, "\nticket accept, %d requests, %d clients, %s:\n"+
			"  sluice ingress               %8.0f tickets/s  p50 %6.2f ms  p99 %6.2f ms\n"+
			"  gin + 1 sync publish/request %8.0f req/s      p50 %6.2f ms  p99 %6.2f ms\n"+
			"  bare gin 202                 %8.0f req/s      p50 %6.2f ms  p99 %6.2f ms\n"+
			"  ratio to the durable peer %.2f, to bare gin %.2f\n"+
			"  CPU per ticket: %.3f ms (serve %.3f, redis %.3f, nats %.3f); the peer's per request: %.3f ms (nats %.3f, gin %.3f); load generator %.3f\n"+
			"  read and write calls per ticket: serve %.1f, redis %.1f, nats %.1f\n"+
			"  Redis commands per ticket (in scripts or not): %s\n",
			acceptRequests, acceptConcurrency, mode, rate, ms(percentile(lat, 50)), ms(percentile(lat, 99)),
			durRate, ms(percentile(durLat, 50)), ms(percentile(durLat, 99)),
			bareRate, ms(percentile(bareLat, 50)), ms(percentile(bareLat, 99)), rate/durRate, rate/bareRate,
			sluiceCPU, per(cpu["serve"]), per(cpu["redis"]), per(cpu["nats"]),
			peerPer, per(peerCPU["nats"]), per(peerCPU["bench"])-per(cpu["bench"]), per(cpu["bench"]),
			perCalls("serve"), perCalls("redis"), perCalls("nats"), redisCmds)
	}
}

// cpuTimes reads the CPU time (user + system) each process has used so far.
func cpuTimes(b *testing.B, procs map[string]int) map[string]time.Duration {
	b.Helper()
	out := map[string]time.Duration{}
	for name, pid := range procs {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			b.Fatalf("CPU time of %s: %v", name, err)
		}
		// Fields after the command name in parentheses (which may hold spaces):
		// state is the 3rd field of the line, utime the 14th, stime the 15th.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] = time.Duration(utime+stime) * time.Second / clockTicks
	}
	return out
}

// ioCalls returns how many read and write calls each process has made
// (/proc/<pid>/io: syscr + syscw): its round trips, which timings on a shared machine
// blur but a count does not.
func ioCalls(b *testing.B, procs map[string]int) map[string]int64 {
	b.Helper()
	out := map[string]int64{}
	for name, pid := range procs {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
		if err != nil {
			b.Fatalf("I/O calls of %s: %v", name, err)
		}
		for line := range strings.Lines(string(raw)) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			if k == "syscr" || k == "syscw" {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[name] += n
			}
		}
	}
	return out
}

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat's times.
const clockTicks = 100

func since(b *testing.B, procs map[string]int, before map[string]time.Duration) map[string]time.Duration {
	now := cpuTimes(b, procs)
	for k := range now {
		now[k] -= before[k]
	}
	return now
}

// startProfile starts a CPU profile of the serve process when SLUICE_BENCH_PROFILE
// names a file (and of the nats-server process, into <file>.nats, when natsProfile is
// its /debug/pprof), and returns what waits for them and writes them.
func startProfile(b *testing.B, ops, natsProfile string) func() {
	path := os.Getenv("SLUICE_BENCH_PROFILE")
	if path == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	if natsProfile != "" {
		wg.Go(func() {
			if err := save(natsProfile+"/profile?seconds=3", path+".nats"); err != nil {
				b.Errorf("nats-server profile: %v", err)
			}
		})
	}
	wg.Go(func() {
		time.Sleep(time.Second)
		if err := save(ops+"/debug/pprof/goroutine?debug=1", path+".goroutine"); err != nil {
			b.Errorf("goroutine profile: %v", err)
		}
	})
	wg.Go(func() {
		if err := save(ops+"/debug/pprof/profile?seconds=3", path); err != nil {
			b.Errorf("profile: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond) // the profile covers the start of the run
	return wg.Wait
}

func save(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}
