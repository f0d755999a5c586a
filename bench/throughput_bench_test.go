package bench

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

const objectSize = 512 << 20

// downloadThroughEdge takes a ticket for key, follows it to the link and downloads it,
// returning the bytes per second of the download itself.
func downloadThroughEdge(b *testing.B, s *server, key string) float64 {
	b.Helper()
	resp, err := http.Post(s.ingress+"/api/v1/downloads", "application/json", bytes.NewReader([]byte(`{"object":"`+key+`"}`)))
	if err != nil {
		b.Fatal(err)
	}
	var tk struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&tk)
	resp.Body.Close()
	var link string
	for deadline := time.Now().Add(30 * time.Second); link == "" && time.Now().Before(deadline); {
		r, err := http.Get(s.ingress + "/api/v1/tickets/" + tk.ID)
		if err != nil {
			b.Fatal(err)
		}
		var t struct {
			DownloadURL string `json:"download_url"`
		}
		json.NewDecoder(r.Body).Decode(&t)
		r.Body.Close()
		link = t.DownloadURL
		time.Sleep(20 * time.Millisecond)
	}
	if link == "" {
		b.Fatal("ticket not admitted within 30s")
	}
	start := time.Now()
	r, err := http.Get(link)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if err != nil || n != objectSize {
		b.Fatalf("downloaded %d bytes (%v), want %d", n, err, objectSize)
	}
	return float64(n) / time.Since(start).Seconds()
}

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
	path := filepath.Join(s.dataDir, "objects", "bench", "big.bin")
	os.MkdirAll(filepath.Dir(path), 0o755)
	f, _ := os.Create(path)
	io.CopyN(f, rand.Reader, objectSize)
	f.Close()
	for b.Loop() {
		edge := downloadThroughEdge(b, s, "bench/big.bin")
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
		edge := downloadThroughEdge(b, s, "big.bin")
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
