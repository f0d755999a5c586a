package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const releaseAdminKey = "slk_benchadmin_releases0123456789"

// releaseServer is a `sluice serve` with a publisher key and one object to announce.
type releaseServer struct {
	*server
	key, sum string
	size     int64
}

func startReleaseServer(b *testing.B) *releaseServer {
	b.Helper()
	s := &releaseServer{server: startServer(b, false, "SLUICE_ADMIN_KEY="+releaseAdminKey)}
	data := bytes.Repeat([]byte("release bench "), 4096)
	path := filepath.Join(s.dataDir, "objects", "bench", "artifact.bin")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256(data)
	s.sum, s.size = hex.EncodeToString(h[:]), int64(len(data))
	status, raw := s.call(b, http.MethodPost, "/api/v1/admin/keys", releaseAdminKey, "application/json", []byte(`{"scope":"publisher"}`))
	var k struct{ Key string }
	if status != http.StatusCreated || json.Unmarshal(raw, &k) != nil {
		b.Fatalf("create publisher key: %d %s", status, raw)
	}
	s.key = k.Key
	return s
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 120 * time.Second}

func (s *releaseServer) call(b *testing.B, method, path, key, ct string, body []byte) (int, []byte) {
	req, _ := http.NewRequest(method, s.ingress+path, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := benchClient.Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func (s *releaseServer) event(id string) []byte {
	j, _ := json.Marshal(map[string]any{"object": "bench/artifact.bin", "sha256": s.sum, "size": s.size, "event_id": id, "channel": "bench"})
	return j
}

func (s *releaseServer) batch(prefix string, n int) []byte {
	var buf bytes.Buffer
	for i := range n {
		buf.Write(s.event(fmt.Sprintf("%s-%d", prefix, i)))
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func (s *releaseServer) recorded(b *testing.B) int64 {
	status, raw := s.call(b, http.MethodGet, "/api/v1/admin/releases/stats", releaseAdminKey, "", nil)
	var st struct {
		Catalog struct {
			Recorded int64 `json:"events_recorded"`
		} `json:"catalog"`
	}
	if status != http.StatusOK || json.Unmarshal(raw, &st) != nil {
		b.Fatalf("release stats: %d %s", status, raw)
	}
	return st.Catalog.Recorded
}

// BenchmarkReleasePublish measures the sustained publish rate through the API:
// 50,000 events as NDJSON batches of 10,000 (two clients at once), next to the same
// events posted one per request by 32 clients.
func BenchmarkReleasePublish(b *testing.B) {
	s := startReleaseServer(b)
	const batched, batchSize, single, clients = 50_000, 10_000, 5_000, 32

	batches := make([][]byte, batched/batchSize)
	for i := range batches {
		batches[i] = s.batch(fmt.Sprintf("b%d", i), batchSize)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 2 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(batches)); i = next.Add(1) - 1 {
				if status, raw := s.call(b, http.MethodPost, "/api/v1/releases", s.key, "application/x-ndjson", batches[i]); status != http.StatusAccepted {
					b.Errorf("batch: %d %.200s", status, raw)
				}
			}
		})
	}
	wg.Wait()
	batchedRate := float64(batched) / time.Since(start).Seconds()

	bodies := make([][]byte, single)
	for i := range bodies {
		bodies[i] = s.event(fmt.Sprintf("s-%d", i))
	}
	next.Store(0)
	start = time.Now()
	for range clients {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < single; i = next.Add(1) - 1 {
				if status, raw := s.call(b, http.MethodPost, "/api/v1/releases", s.key, "application/json", bodies[i]); status != http.StatusAccepted {
					b.Errorf("single: %d %.200s", status, raw)
				}
			}
		})
	}
	wg.Wait()
	singleRate := float64(single) / time.Since(start).Seconds()
	b.ReportMetric(batchedRate, "batched_events/s")
	b.ReportMetric(singleRate, "single_events/s")
	b.ReportMetric(batchedRate/singleRate, "batched/single")
	b.Logf("publish through the API: %.0f events/s in batches of %d, %.0f events/s one per request (%d clients): ratio %.1f",
		batchedRate, batchSize, singleRate, clients, batchedRate/singleRate)
}

// BenchmarkReleaseBurstCatalogued measures a burst of 10,000 events from the POST to
// the moment the last one is verified and catalogued (one serve process, 16 at once).
func BenchmarkReleaseBurstCatalogued(b *testing.B) {
	s := startReleaseServer(b)
	const burst = 10_000
	body := s.batch("burst", burst)
	start := time.Now()
	if status, raw := s.call(b, http.MethodPost, "/api/v1/releases", s.key, "application/x-ndjson", body); status != http.StatusAccepted {
		b.Fatalf("burst: %d %.200s", status, raw)
	}
	accepted := time.Since(start)
	for s.recorded(b) < burst {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("burst not catalogued within 2 minutes: %d recorded", s.recorded(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := time.Since(start)
	b.ReportMetric(ms(accepted), "accepted_ms")
	b.ReportMetric(ms(done), "catalogued_ms")
	b.ReportMetric(float64(burst)/done.Seconds(), "catalogued_events/s")
	b.Logf("burst of %d events: 202 after %s, all catalogued after %s (%.0f events/s end to end)",
		burst, accepted.Round(time.Millisecond), done.Round(time.Millisecond), float64(burst)/done.Seconds())
}
