package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/catalog"
)

// An edge role given SLUICE_NATS_URL checks its cached copies against the release
// catalog, as serve does: a copy whose bytes match the catalog's SHA-256 is kept
// (recorded as checked against the catalog) and served from disk; a copy that does
// not match what the catalog says that version is, is discarded and counted, and
// its downloads keep coming from the store, always with the right bytes.
func TestEdgeRoleChecksCachedCopiesAgainstTheCatalog(t *testing.T) {
	dir := t.TempDir()
	s := newStack(t, stackOptions{S3: true, Env: []string{"SLUICE_ADMIN_KEY=" + opsAdminKey}})
	s.dumpLogsOnFailure()
	good, bad := randomBytes(cacheObject, 71), randomBytes(cacheObject, 72)
	s.start("worker") // creates the catalog's buckets
	record := func(key string, data []byte, digest string) {
		t.Helper()
		info, err := s.minio.Client(t).PutObject(t.Context(), s.bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{ContentType: "application/octet-stream"})
		if err != nil {
			t.Fatal(err)
		}
		js, done := connectJetStream(t, s.nats.URL)
		defer done()
		rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
		defer rdb.Close()
		cat, err := catalog.Open(t.Context(), js, rdb, catalog.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := cat.Record(t.Context(), catalog.Result{Identity: "e2e-" + key, Object: key, Size: int64(len(data)),
			SHA256: digest, ETag: info.ETag, ContentType: "application/octet-stream", PublishedAt: time.Now(),
			State: catalog.StateVerified}); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256(good)
	record("good.bin", good, hex.EncodeToString(sum[:]))
	record("bad.bin", bad, hex.EncodeToString(make([]byte, 32))) // what the store holds is not what was verified

	edge := s.start("edge", "SLUICE_EDGE_CACHE_DIR="+dir, "SLUICE_EDGE_CACHE_SIZE="+strconv.FormatInt(4*cacheObject, 10))
	s.start("ingress")
	waitEdgeCatalog(t, edge)

	s.mustDownload("good.bin", good)
	eventually(t, 10*time.Second, "good.bin cached", func() bool { return s.cacheMetrics()["used"] == cacheObject })
	s.mustDownload("good.bin", good)
	if m := s.cacheMetrics(); m["hit"] != 1 {
		t.Fatalf("good.bin was not served from the cache: %v", m)
	}
	sidecars, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(sidecars) != 1 {
		t.Fatalf("cache directory has %v, want one entry", sidecars)
	}
	var meta struct {
		Key          string `json:"key"`
		DigestSource string `json:"digest_source"`
	}
	raw, _ := os.ReadFile(sidecars[0])
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Key != "good.bin" || meta.DigestSource != "catalog" {
		t.Fatalf("cached entry %s (%v), want good.bin checked against the catalog", raw, err)
	}

	// bad.bin: each download is right (from the store); the copy is never kept.
	s.mustDownload("bad.bin", bad)
	eventually(t, 10*time.Second, "bad.bin's copy refused", func() bool { return s.cacheMetrics()["failed"] == 1 })
	s.mustDownload("bad.bin", bad)
	if m := s.cacheMetrics(); m["hit"] != 1 || m["used"] != cacheObject {
		t.Fatalf("after two downloads of bad.bin: %v; want no hit of it and only good.bin kept", m)
	}
}
