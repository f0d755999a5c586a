// Package bench measures sluice against real services and, in the same run, against a
// peer doing the same work without sluice, so the figures are ratios that survive a
// noisy machine. Run with `make bench`.
package bench

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/internal/testenv"
)

var sluiceBin string

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode) // the peers' Gin servers, as cmd/sluice runs sluice's
	var remove func()
	sluiceBin, remove = testenv.BuildSluice("bench")
	code := m.Run()
	remove()
	os.Exit(code)
}

// server is one `sluice serve` process against real Redis and NATS (and MinIO when
// asked), with objects on local disk otherwise.
type server struct {
	ingress, edge string
	dataDir       string
	natsURL       string // the server's NATS (SyncAlways, as testenv starts it)
	redis         *testenv.Redis
	minio         *testenv.MinIO
	bucket        string
	proc          *testenv.Process
	env           []string // what the server runs with: another role can join it
}

func startServer(b *testing.B, withMinIO bool, env ...string) *server {
	b.Helper()
	return startServerOn(b, testenv.StartNATS(b).URL, withMinIO, env...)
}

// startServerOn is startServer against the NATS server at natsURL.
func startServerOn(b *testing.B, natsURL string, withMinIO bool, env ...string) *server {
	b.Helper()
	s := &server{dataDir: b.TempDir(), natsURL: natsURL}
	redis := testenv.StartRedis(b)
	s.redis = redis
	ip, ep := testenv.FreePort(b), testenv.FreePort(b)
	s.ingress = "http://127.0.0.1:" + strconv.Itoa(ip)
	s.edge = "http://127.0.0.1:" + strconv.Itoa(ep)
	key := base64.StdEncoding.EncodeToString([]byte("bench-signing-key-0123456789abcdef"))
	env = append([]string{
		"SLUICE_NATS_URL=" + natsURL,
		"SLUICE_REDIS_URL=" + redis.URL,
		"SLUICE_DATA_DIR=" + s.dataDir,
		"SLUICE_SIGNING_KEYS=k1:" + key,
		"SLUICE_INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(ip),
		"SLUICE_EDGE_ADDR=127.0.0.1:" + strconv.Itoa(ep),
		"SLUICE_PUBLIC_EDGE_URL=" + s.edge,
		"SLUICE_DEMO=false",
		"SLUICE_TICKET_RATE=0", // the accept benchmark is one client taking 20,000 tickets
		"SLUICE_LOG_LEVEL=warn",
		"SLUICE_GLOBAL_LIMIT=1000",
	}, env...)
	if withMinIO {
		s.minio = testenv.StartMinIO(b)
		s.bucket = "bench"
		s.minio.Bucket(b, s.bucket)
		env = append(env, "SLUICE_S3_ENDPOINT="+s.minio.Endpoint, "SLUICE_S3_BUCKET="+s.bucket,
			"SLUICE_S3_ACCESS_KEY="+s.minio.AccessKey, "SLUICE_S3_SECRET_KEY="+s.minio.SecretKey)
	}
	s.env = env
	s.proc = testenv.Start(b, b.TempDir(), sluiceBin, env, "serve")
	testenv.WaitHTTP(b, s.ingress+"/readyz", 30*time.Second, s.proc.Log)
	return s
}

// writeLocalObject writes size bytes of a fixed pattern as the local-store object key
// of s, and returns its path.
func writeLocalObject(b *testing.B, s *server, key string, size int64) string {
	b.Helper()
	path := filepath.Join(s.dataDir, "objects", filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 31)
	}
	for written := int64(0); written < size; written += int64(len(block)) {
		if _, err := f.Write(block[:min(int64(len(block)), size-written)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
