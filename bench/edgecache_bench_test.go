package bench

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// BenchmarkEdgeCache: a 1 GiB object in MinIO through an edge with a disk cache.
// In one run: the object through an edge without a cache, the first download (a
// miss: it streams from MinIO while the fill writes the copy behind it), the same
// object served from the cache, nginx serving the cached file from the same disk, a
// direct minio-go GET, and 64 KiB ranges of the cached file from the edge and nginx.
func BenchmarkEdgeCache(b *testing.B) {
	dir := b.TempDir()
	s := startServer(b, true, "SLUICE_EDGE_CACHE_DIR="+dir, "SLUICE_EDGE_CACHE_SIZE="+strconv.Itoa(2*edgeObjectSize),
		"SLUICE_MAX_CONNS_PER_TOKEN="+strconv.Itoa(rangeConns)) // the ranges part: one link, 64 connections
	mc := s.minio.Client(b)
	if _, err := mc.PutObject(b.Context(), s.bucket, "cached.bin", io.LimitReader(rand.Reader, edgeObjectSize), edgeObjectSize, minio.PutObjectOptions{}); err != nil {
		b.Fatal(err)
	}
	// The uncached path to compare the miss with: a second edge without a cache on the
	// same stack. Links are valid on any edge, so a link's path is moved to it.
	plainPort := testenv.FreePort(b)
	plainEdge := "http://127.0.0.1:" + strconv.Itoa(plainPort)
	plain := testenv.Start(b, b.TempDir(), sluiceBin, append(append([]string{}, s.env...),
		"SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(plainPort), "SLUICE_EDGE_METRICS_ADDR=", "SLUICE_EDGE_CACHE_DIR="), "edge")
	testenv.WaitHTTP(b, plainEdge+"/readyz", 30*time.Second, plain.Log)
	uncached := getAll(b, strings.Replace(edgeLink(b, s, "cached.bin"), s.edge, plainEdge, 1), edgeObjectSize)
	miss := getAll(b, edgeLink(b, s, "cached.bin"), edgeObjectSize)
	var file string
	for deadline := time.Now().Add(60 * time.Second); file == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the object was not cached within 60s")
		}
		copies, _ := filepath.Glob(filepath.Join(dir, "*.data"))
		if len(copies) == 1 {
			file = filepath.Base(copies[0])
		}
	}
	nginx := startNginx(b, dir)
	getAll(b, nginx+"/"+file, edgeObjectSize) // page cache warm for both

	for b.Loop() {
		cached := getAll(b, edgeLink(b, s, "cached.bin"), edgeObjectSize)
		peer := getAll(b, nginx+"/"+file, edgeObjectSize)
		start := time.Now()
		obj, err := mc.GetObject(b.Context(), s.bucket, "cached.bin", minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.CopyBuffer(io.Discard, obj, make([]byte, 256<<10))
		obj.Close()
		direct := float64(n) / time.Since(start).Seconds()

		b.ReportMetric(cached/1e6, "cached-MB/s")
		b.ReportMetric(peer/1e6, "nginx-MB/s")
		b.ReportMetric(miss/1e6, "miss-MB/s")
		b.ReportMetric(cached/peer, "ratio-to-nginx")
		b.ReportMetric(cached/miss, "ratio-to-miss")
		b.ReportMetric(uncached/1e6, "no-cache-MB/s")
		b.ReportMetric(miss/uncached, "miss-ratio-to-no-cache")
		fmt.Fprintf(os.Stderr, "\nedge cache, one 1 GiB object from MinIO, one client:\n"+
			"  cached, through the edge   %7.0f MB/s\n  nginx, same file and disk  %7.0f MB/s  (ratio %.2f)\n"+
			"  first download (miss)      %7.0f MB/s  (ratio %.2f)\n  direct minio-go GET        %7.0f MB/s  (ratio %.2f)\n"+
			"  edge without a cache       %7.0f MB/s  (miss / no cache %.2f)\n",
			cached/1e6, peer/1e6, cached/peer, miss/1e6, cached/miss, direct/1e6, cached/direct, uncached/1e6, miss/uncached)

		// Small ranges: what a download manager's or a package mirror's requests look
		// like, where the per-request cost (token, ledger, version check) dominates.
		edgeRanges := wrkRandomRanges(b, edgeLink(b, s, "cached.bin"), edgeObjectSize)
		peerRanges := wrkRandomRanges(b, nginx+"/"+file, edgeObjectSize)
		b.ReportMetric(edgeRanges.rps, "cached-64KiB-req/s")
		b.ReportMetric(peerRanges.rps, "nginx-64KiB-req/s")
		b.ReportMetric(edgeRanges.rps/peerRanges.rps, "ranges-ratio-to-nginx")
		fmt.Fprintf(os.Stderr, "\n64 KiB ranges of the same cached file, wrk -t2 -c%d -d%s, random offsets:\n"+
			"  cached, through the edge   %7.0f req/s  %6.0f MB/s  p99 %s\n"+
			"  nginx, same file and disk  %7.0f req/s  %6.0f MB/s  p99 %s  (ratio %.2f)\n",
			rangeConns, rangeDuration, edgeRanges.rps, edgeRanges.rps*rangeSize/1e6, edgeRanges.p99,
			peerRanges.rps, peerRanges.rps*rangeSize/1e6, peerRanges.p99, edgeRanges.rps/peerRanges.rps)
	}
}

// rangeDuration is how long each side of the cache's range load runs (rangeConns and
// rangeSize: edge_bench_test.go).
const rangeDuration = 5 * time.Second

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rps float64
	p99 string
}

// wrkRandomRanges runs wrk against url for rangeDuration with rangeConns connections, each
// request a Range of rangeSize bytes at a random aligned offset of the size bytes. A
// run with any answer that is not 2xx (a refused connection, a 429) fails.
func wrkRandomRanges(b *testing.B, url string, size int64) wrkResult {
	b.Helper()
	bin, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is not installed: run scripts/deps.sh bench (or apt-get install -y wrk)")
	}
	script := filepath.Join(b.TempDir(), "ranges.lua")
	lua := fmt.Sprintf(`local spans = %d
request = function()
  local at = math.random(0, spans - 1) * %d
  return wrk.format("GET", nil, {Range = "bytes=" .. at .. "-" .. (at + %d - 1)})
end
`, size/rangeSize, rangeSize, rangeSize)
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(bin, "-t2", "-c"+strconv.Itoa(rangeConns), "-d"+rangeDuration.String(),
		"--latency", "-s", script, url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "Non-2xx") || strings.Contains(text, "Socket errors") {
		b.Fatalf("wrk saw failed requests:\n%s", text)
	}
	var r wrkResult
	for line := range strings.SplitSeq(text, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 2 && fields[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(fields[1], 64)
		case len(fields) == 2 && fields[0] == "99%":
			r.p99 = fields[1]
		}
	}
	if r.rps == 0 {
		b.Fatalf("wrk printed no request rate:\n%s", text)
	}
	return r
}
