package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// The edge's disk cache over real MinIO (shared/edgecache): every body is checked
// by the client's SHA-256; what came from where, by the edge's own counters.

const cacheObject = 8 << 20

// startCachedEdge runs a stack whose edge caches up to size bytes in dir (and has
// edgeEnv besides).
func startCachedEdge(t *testing.T, dir string, size int64, edgeEnv ...string) *stack {
	t.Helper()
	s := newStack(t, stackOptions{S3: true, GlobalLimit: 12, Env: []string{"SLUICE_ADMIN_KEY=" + opsAdminKey}})
	s.dumpLogsOnFailure()
	edge := s.start("edge", append([]string{"SLUICE_EDGE_CACHE_DIR=" + dir, "SLUICE_EDGE_CACHE_SIZE=" + strconv.FormatInt(size, 10)}, edgeEnv...)...)
	s.start("worker")
	s.start("ingress")
	waitEdgeCatalog(t, edge)
	return s
}

// waitEdgeCatalog waits for an edge to have bound the catalog's bucket (which a worker
// creates): until then it caches nothing.
func waitEdgeCatalog(t *testing.T, edge *testenv.Process) {
	t.Helper()
	eventually(t, 10*time.Second, "the edge bound to the catalog", func() bool {
		log, _ := os.ReadFile(edge.Log)
		return bytes.Contains(log, []byte("the edge cache checks copies against the release catalog"))
	})
}

// cacheMetrics reads the edge cache's counters from the edge's /metrics.
func (s *stack) cacheMetrics() map[string]float64 {
	s.t.Helper()
	m, _ := scrape(s.t, s.edgeMetricsURL+"/metrics")
	return map[string]float64{
		"hit":      m[`sluice_edge_cache_requests_total{result="hit"}`],
		"stale":    m[`sluice_edge_cache_requests_total{result="stale"}`],
		"origin":   m[`sluice_edge_cache_read_bytes_total{source="origin"}`],
		"cache":    m[`sluice_edge_cache_read_bytes_total{source="cache"}`],
		"evicted":  m["sluice_edge_cache_evictions_total"],
		"failed":   m["sluice_edge_cache_verification_failures_total"],
		"used":     m["sluice_edge_cache_used_bytes"],
		"capacity": m["sluice_edge_cache_capacity_bytes"],
	}
}

// mustDownload downloads a new link of object and checks its bytes.
func (s *stack) mustDownload(object string, want []byte) {
	s.t.Helper()
	_, link := s.link(object)
	if got, n, resp := download(s.t, link); resp.StatusCode != http.StatusOK || got != sha(want) {
		s.t.Fatalf("%s: %d, %d bytes with SHA-256 %s, want %d bytes %s", object, resp.StatusCode, n, got, len(want), sha(want))
	}
}

func TestEdgeCacheFillHitConcurrencyCorruptionEviction(t *testing.T) {
	dir := t.TempDir()
	s := startCachedEdge(t, dir, 5*cacheObject/2) // room for two objects
	a, b, c := randomBytes(cacheObject, 61), randomBytes(cacheObject, 62), randomBytes(cacheObject, 63)
	s.putObject("a.bin", a)
	s.putObject("b.bin", b)
	s.putObject("c.bin", c)

	// Fill, then hit: the second download reads nothing from MinIO.
	s.mustDownload("a.bin", a)
	eventually(t, 10*time.Second, "a.bin cached", func() bool { return s.cacheMetrics()["used"] == cacheObject })
	s.mustDownload("a.bin", a)
	m := s.cacheMetrics()
	if m["hit"] != 1 || m["origin"] != cacheObject || m["cache"] != cacheObject {
		t.Fatalf("after a fill and a hit: %v; want 1 hit, one object's bytes from each side", m)
	}
	// The same figures in the edge's heartbeat, for the dashboard.
	eventually(t, 10*time.Second, "the edge's cache figures in GET /api/v1/admin/workers", func() bool {
		for _, n := range s.nodes() {
			if c := n.Cache; n.Role == "edge" && c != nil && c.Hits == 1 && c.BytesFromCache == cacheObject &&
				c.BytesFromOrigin == cacheObject && c.HitRatio > 0 && c.HitRatio < 1 {
				return true
			}
		}
		return false
	})

	// Six first downloads of b at once: MinIO is read once, by the fill they follow.
	links := make([]string, 6)
	for i := range links {
		_, links[i] = s.link("b.bin")
	}
	var wg sync.WaitGroup
	for _, link := range links {
		wg.Go(func() {
			if got, _, resp := download(t, link); resp.StatusCode != http.StatusOK || got != sha(b) {
				t.Errorf("concurrent first download of b.bin: %d, SHA-256 %s", resp.StatusCode, got)
			}
		})
	}
	wg.Wait()
	eventually(t, 10*time.Second, "b.bin cached", func() bool { return s.cacheMetrics()["used"] == 2*cacheObject })
	if m := s.cacheMetrics(); m["origin"] != 2*cacheObject {
		t.Fatalf("six concurrent first downloads read %v bytes from MinIO, want one object's (%d)", m["origin"]-cacheObject, cacheObject)
	}

	// Damage both copies on disk: neither is served; the downloads are still right.
	damaged, _ := filepath.Glob(filepath.Join(dir, "*.data"))
	if len(damaged) != 2 {
		t.Fatalf("cache directory has %v, want two copies", damaged)
	}
	time.Sleep(20 * time.Millisecond) // a modification time the files did not have
	for _, p := range damaged {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteAt([]byte("bit rot"), 4096)
		f.Close()
	}
	before := s.cacheMetrics()
	s.mustDownload("a.bin", a)
	s.mustDownload("b.bin", b)
	if m := s.cacheMetrics(); m["failed"] != 2 || m["hit"] != before["hit"] {
		t.Fatalf("damaged copies: %v; want 2 verification failures and no hit", m)
	}

	// Eviction: with room for two, a third object evicts the least recently used.
	eventually(t, 10*time.Second, "a.bin and b.bin cached again", func() bool { return s.cacheMetrics()["used"] == 2*cacheObject })
	s.mustDownload("a.bin", a) // b is now the least recently used
	s.mustDownload("c.bin", c)
	eventually(t, 10*time.Second, "c.bin cached in b.bin's place", func() bool {
		m := s.cacheMetrics() // room is made when the fill starts; the copy counts once verified
		return m["evicted"] == 1 && m["used"] == 2*cacheObject
	})
	m = s.cacheMetrics()
	if m["used"] > m["capacity"] || m["used"] != 2*cacheObject {
		t.Fatalf("after eviction: %v", m)
	}
	hits := m["hit"]
	s.mustDownload("a.bin", a)
	s.mustDownload("c.bin", c)
	if got := s.cacheMetrics()["hit"] - hits; got != 2 {
		t.Fatalf("a.bin and c.bin should be served from the cache (b.bin evicted): %v hits of 2", got)
	}
}

// MinIO stops: cached objects are still served (stale on error), uncached ones are
// refused with 503 + Retry-After, fast once the breaker is open.
func TestEdgeCacheServesThroughStorageOutage(t *testing.T) {
	// Every request asks MinIO (no revalidation window), so each one meets the outage.
	s := startCachedEdge(t, t.TempDir(), 64<<20, "SLUICE_EDGE_REVALIDATE=0")
	cached, uncached := randomBytes(cacheObject, 64), randomBytes(cacheObject, 65)
	s.putObject("cached.bin", cached)
	s.putObject("uncached.bin", uncached)
	s.mustDownload("cached.bin", cached)
	eventually(t, 10*time.Second, "cached.bin cached", func() bool { return s.cacheMetrics()["used"] == cacheObject })
	// Links are issued before the outage: the worker does not need MinIO, the
	// ingress's object check would.
	_, uncachedLink := s.link("uncached.bin")
	cachedLinks := make([]string, 3)
	for i := range cachedLinks {
		_, cachedLinks[i] = s.link("cached.bin")
	}

	s.minio.Stop()
	if got, _, resp := download(t, cachedLinks[0]); resp.StatusCode != http.StatusOK || got != sha(cached) {
		t.Fatalf("cached object with MinIO down: %d, SHA-256 %s", resp.StatusCode, got)
	}
	eventually(t, 30*time.Second, "the breaker open", func() bool {
		st, retry := getStatus(t, uncachedLink)
		if st != http.StatusServiceUnavailable || retry == "" {
			t.Fatalf("uncached object with MinIO down: %d Retry-After=%q, want 503 with Retry-After", st, retry)
		}
		m, _ := scrape(t, s.edgeMetricsURL+"/metrics")
		return m[`sluice_breaker_state{breaker="objects",state="open"}`] == 1
	})
	start := time.Now()
	st, retry := getStatus(t, uncachedLink)
	if took := time.Since(start); st != http.StatusServiceUnavailable || retry == "" || took >= 100*time.Millisecond {
		t.Fatalf("uncached object with the breaker open: %d Retry-After=%q in %s, want 503 fast", st, retry, took)
	}
	for _, link := range cachedLinks[1:] {
		if got, _, resp := download(t, link); resp.StatusCode != http.StatusOK || got != sha(cached) {
			t.Fatalf("cached object with the breaker open: %d, SHA-256 %s", resp.StatusCode, got)
		}
	}
	if m := s.cacheMetrics(); m["stale"] < 3 {
		t.Fatalf("stale hits %v, want 3", m["stale"])
	}
}
