package bench

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// BenchmarkEdgeCache: a 1 GiB object in MinIO through an edge with a disk cache.
// In one run: the first download (a miss: it follows the fill from MinIO), the same
// object served from the cache, nginx serving the cached file from the same disk,
// and a direct minio-go GET.
func BenchmarkEdgeCache(b *testing.B) {
	dir := b.TempDir()
	s := startServer(b, true, "SLUICE_EDGE_CACHE_DIR="+dir, "SLUICE_EDGE_CACHE_SIZE="+strconv.Itoa(2*edgeObjectSize))
	mc := s.minio.Client(b)
	if _, err := mc.PutObject(b.Context(), s.bucket, "cached.bin", io.LimitReader(rand.Reader, edgeObjectSize), edgeObjectSize, minio.PutObjectOptions{}); err != nil {
		b.Fatal(err)
	}
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
		fmt.Fprintf(os.Stderr, "\nedge cache, one 1 GiB object from MinIO, one client:\n"+
			"  cached, through the edge   %7.0f MB/s\n  nginx, same file and disk  %7.0f MB/s  (ratio %.2f)\n"+
			"  first download (miss)      %7.0f MB/s  (ratio %.2f)\n  direct minio-go GET        %7.0f MB/s  (ratio %.2f)\n",
			cached/1e6, peer/1e6, cached/peer, miss/1e6, cached/miss, direct/1e6, cached/direct)
	}
}
