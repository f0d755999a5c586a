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
// a bare Gin handler that binds the same JSON and answers 202 — the floor any Gin
// service pays — in the same run.
func BenchmarkTicketAccept(b *testing.B) {
	s := startServer(b, false)
	obj := filepath.Join(s.dataDir, "objects", "bench", "small.bin")
	os.MkdirAll(filepath.Dir(obj), 0o755)
	os.WriteFile(obj, []byte("x"), 0o644)
	body := []byte(`{"object":"bench/small.bin"}`)

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/api/v1/downloads", func(c *gin.Context) {
		var req struct {
			Object string `json:"object"`
		}
		if c.ShouldBindJSON(&req) != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		c.JSON(http.StatusAccepted, gin.H{"object": req.Object, "status": "queued"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	peer := &http.Server{Handler: r}
	go peer.Serve(ln)
	defer peer.Close()

	for b.Loop() {
		peerRate, peerLat := load(b, "http://"+ln.Addr().String()+"/api/v1/downloads", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		rate, lat := load(b, s.ingress+"/api/v1/downloads", body, acceptRequests, acceptConcurrency, http.StatusAccepted)
		b.ReportMetric(rate, "tickets/s")
		b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
		b.ReportMetric(peerRate, "bare-gin-req/s")
		b.ReportMetric(rate/peerRate, "ratio-to-bare-gin")
		fmt.Fprintf(os.Stderr, "\nticket accept, %d requests, %d clients:\n  sluice ingress  %8.0f tickets/s  p50 %6.2f ms  p99 %6.2f ms\n  bare gin 202    %8.0f req/s      p50 %6.2f ms  p99 %6.2f ms\n  ratio %.2f\n",
			acceptRequests, acceptConcurrency, rate, ms(percentile(lat, 50)), ms(percentile(lat, 99)),
			peerRate, ms(percentile(peerLat, 50)), ms(percentile(peerLat, 99)), rate/peerRate)
	}
}
