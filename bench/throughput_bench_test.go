package bench

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

const objectSize = 512 << 20

func reportThroughput(b *testing.B, name string, edge, direct float64) {
	b.ReportMetric(edge/1e6, "edge-MB/s")
	b.ReportMetric(direct/1e6, "direct-MB/s")
	b.ReportMetric(edge/direct, "ratio-to-direct")
	fmt.Fprintf(os.Stderr, "\n%s, one %d MiB object, one client:\n  through the edge  %7.0f MB/s\n  straight from the store %7.0f MB/s\n  ratio %.2f\n",
		name, objectSize>>20, edge/1e6, direct/1e6, edge/direct)
}

// BenchmarkThroughputLocal: a download through the edge from the local store, next to
// reading the same file straight from disk (page cache) in the same run.
func BenchmarkThroughputLocal(b *testing.B) {
	s := startServer(b, false)
	path := writeLocalObject(b, s, "bench/big.bin", objectSize)
	for b.Loop() {
		edge := getAll(b, edgeLink(b, s, "bench/big.bin"), objectSize)
		start := time.Now()
		f, _ := os.Open(path)
		n, _ := io.CopyBuffer(io.Discard, f, make([]byte, 256<<10))
		f.Close()
		direct := float64(n) / time.Since(start).Seconds()
		reportThroughput(b, "local disk", edge, direct)
	}
}

// BenchmarkThroughputMinIO: a download through the edge from MinIO, next to a direct
// minio-go GET of the same object in the same run.
func BenchmarkThroughputMinIO(b *testing.B) {
	s := startServer(b, true)
	mc := s.minio.Client(b)
	if _, err := mc.PutObject(b.Context(), s.bucket, "big.bin", io.LimitReader(rand.Reader, objectSize), objectSize, minio.PutObjectOptions{}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		edge := getAll(b, edgeLink(b, s, "big.bin"), objectSize)
		start := time.Now()
		obj, err := mc.GetObject(b.Context(), s.bucket, "big.bin", minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.CopyBuffer(io.Discard, obj, make([]byte, 256<<10))
		obj.Close()
		direct := float64(n) / time.Since(start).Seconds()
		reportThroughput(b, "MinIO", edge, direct)
	}
}
