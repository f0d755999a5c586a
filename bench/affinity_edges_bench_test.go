package bench

import (
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// BenchmarkEdgeAffinityRealEdges is BenchmarkEdgeAffinityHitRatio with real edges:
// four `sluice edge` processes with disk caches, each advertising its own URL, in
// front of MinIO, and a `sluice serve` whose worker chooses each link's edge
// (--edge-affinity). The same Zipf workload runs twice on separate sets of objects,
// each from cold caches: links followed as issued (edge per object), and links
// spread over the four edges by request, as a balancer in front of one public URL
// would (links are valid on every edge). The hit ratios come from the edges' own
// counters (sluice_edge_cache_requests_total).
func BenchmarkEdgeAffinityRealEdges(b *testing.B) {
	const (
		edges    = 4
		objects  = 200
		size     = 64 << 10
		perEdge  = 10 // objects each edge caches: a fifth of the set over the four
		requests = 3000
		clients  = 4
	)
	s := startServer(b, true, "SLUICE_EDGE_AFFINITY=true", "SLUICE_GLOBAL_LIMIT=64")
	mc := s.minio.Client(b)
	for _, set := range []string{"affine", "spread"} {
		for k := range objects {
			if _, err := mc.PutObject(b.Context(), s.bucket, fmt.Sprintf("%s/%d.bin", set, k), io.LimitReader(rand.Reader, size), size, minio.PutObjectOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	var urls, metrics []string
	for range edges {
		port, mport := testenv.FreePort(b), testenv.FreePort(b)
		u := "http://127.0.0.1:" + strconv.Itoa(port)
		p := testenv.Start(b, b.TempDir(), sluiceBin, append(append([]string{}, s.env...),
			"SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(port), "SLUICE_EDGE_ADVERTISE_URL="+u,
			"SLUICE_EDGE_METRICS_ADDR=127.0.0.1:"+strconv.Itoa(mport),
			"SLUICE_EDGE_CACHE_DIR="+b.TempDir(), "SLUICE_EDGE_CACHE_SIZE="+strconv.Itoa(perEdge*size)), "edge")
		testenv.WaitHTTP(b, u+"/readyz", 30*time.Second, p.Log)
		urls, metrics = append(urls, u), append(metrics, "http://127.0.0.1:"+strconv.Itoa(mport)+"/metrics")
	}
	// Until the workers see the four edges: a link names one of them.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("links do not name the advertised edges")
		}
		if link := fileLink(b, s, "affine/0.bin", -int(time.Now().UnixNano())); onEdge(urls, link) {
			getAll(b, link, size)
			break
		}
	}
	counts := func() (hits, misses float64) {
		for _, m := range metrics {
			v := scrapeValues(b, m)
			hits += v[`sluice_edge_cache_requests_total{result="hit"}`]
			misses += v[`sluice_edge_cache_requests_total{result="miss"}`]
		}
		return hits, misses
	}
	run := func(set string, spread bool, first int) float64 { // downloads numbered from first
		rng := mrand.New(mrand.NewPCG(1, 2))
		zipf := mrand.NewZipf(rng, 1.1, 1, objects-1)
		work := make(chan [2]int, requests)
		for r := range requests {
			work <- [2]int{r, int(zipf.Uint64())}
		}
		close(work)
		h0, m0 := counts()
		start := time.Now()
		defer func() {
			fmt.Fprintf(os.Stderr, "  %s: %d downloads in %s\n", set, requests, time.Since(start).Round(time.Millisecond))
		}()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for w := range work {
					link := fileLink(b, s, fmt.Sprintf("%s/%d.bin", set, w[1]), first+w[0])
					if spread { // a balancer: the request goes to the next edge
						u, _ := url.Parse(link)
						link = urls[w[0]%edges] + u.Path + "?" + u.RawQuery
					}
					getAll(b, link, size)
				}
			})
		}
		wg.Wait()
		h, m := counts()
		return (h - h0) / (h - h0 + m - m0)
	}
	for b.Loop() {
		with := run("affine", false, 0)
		without := run("spread", true, requests)
		b.ReportMetric(without, "hit-ratio-spread")
		b.ReportMetric(with, "hit-ratio-affinity")
		fmt.Fprintf(os.Stderr, "\nreal edges: Zipf 1.1 over %d objects of %d KiB, %d requests by %d clients, %d edges caching %d objects each:\n"+
			"  hit ratio, links spread over the edges  %.3f\n  hit ratio, edge chosen per object      %.3f\n",
			objects, size>>10, requests, clients, edges, perEdge, without, with)
	}
}

// fileLink asks GET /api/v1/files/{key} for a link to key, as download number n (its
// Idempotency-Key: each download its own ticket): the ingress answers with a redirect
// to the link once the ticket is admitted.
func fileLink(b *testing.B, s *server, key string, n int) string {
	b.Helper()
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		req, _ := http.NewRequest(http.MethodGet, s.ingress+"/api/v1/files/"+key, nil)
		req.Header.Set("Idempotency-Key", "bench-"+strconv.Itoa(n))
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 == 3 && strings.Contains(loc, "/d/") {
			return loc
		}
		if resp.StatusCode/100 != 3 && resp.StatusCode != http.StatusServiceUnavailable {
			b.Fatalf("GET /api/v1/files/%s: %s", key, resp.Status)
		}
		time.Sleep(5 * time.Millisecond) // sent back to wait again
	}
	b.Fatalf("no link for %s within 30s", key)
	return ""
}

// onEdge reports whether link is on one of the edges at urls.
func onEdge(urls []string, link string) bool {
	for _, u := range urls {
		if strings.HasPrefix(link, u+"/") {
			return true
		}
	}
	return false
}

// scrapeValues reads the samples of a Prometheus page.
func scrapeValues(b *testing.B, url string) map[string]float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	series, err := testenv.ParseMetrics(raw)
	if err != nil {
		b.Fatalf("%s: %v", url, err)
	}
	return series
}
