package bench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// BenchmarkTicketAccept measures POST /api/v1/downloads (validate, stat, publish to
// JetStream and await the PubAck, record in Redis) under 64 concurrent clients, next to
// two peers in the same run: a bare Gin handler that binds the same JSON and answers
// 202 (the floor any Gin service pays), and the same handler publishing one message to
// JetStream per request and awaiting its PubAck on the same NATS server (SyncAlways):
// the durable per-message design that sluice's accept path has to beat.
func BenchmarkTicketAccept(b *testing.B) {
	s := startServer(b, false)
	obj := filepath.Join(s.dataDir, "objects", "bench", "small.bin")
	os.MkdirAll(filepath.Dir(obj), 0o755)
	os.WriteFile(obj, []byte("x"), 0o644)
	body := []byte(`{"object":"bench/small.bin"}`)

	nc, err := nats.Connect(s.natsURL)
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

	gin.SetMode(gin.ReleaseMode)
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
		msg := &nats.Msg{Subject: "peer.t." + id, Data: []byte(`{"object":"` + obj + `","id":"` + id + `"}`), Header: nats.Header{}}
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

	for b.Loop() {
		bareRate, bareLat := load(b, peerURL+"/bare", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		durRate, durLat := load(b, peerURL+"/durable", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		rate, lat := load(b, s.ingress+"/api/v1/downloads", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		b.ReportMetric(rate, "tickets/s")
		b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
		b.ReportMetric(bareRate, "bare-gin-req/s")
		b.ReportMetric(durRate, "durable-peer-req/s")
		b.ReportMetric(rate/durRate, "ratio-to-durable-peer")
		fmt.Fprintf(os.Stderr, "\nticket accept, %d requests, %d clients, JetStream SyncAlways:\n"+
			"  sluice ingress               %8.0f tickets/s  p50 %6.2f ms  p99 %6.2f ms\n"+
			"  gin + 1 sync publish/request %8.0f req/s      p50 %6.2f ms  p99 %6.2f ms\n"+
			"  bare gin 202                 %8.0f req/s      p50 %6.2f ms  p99 %6.2f ms\n"+
			"  ratio to the durable peer %.2f, to bare gin %.2f\n",
			acceptRequests, acceptConcurrency, rate, ms(percentile(lat, 50)), ms(percentile(lat, 99)),
			durRate, ms(percentile(durLat, 50)), ms(percentile(durLat, 99)),
			bareRate, ms(percentile(bareLat, 50)), ms(percentile(bareLat, 99)), rate/durRate, rate/bareRate)
	}
}
