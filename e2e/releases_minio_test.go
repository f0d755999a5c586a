package e2e

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// A real MinIO announces uploads to NATS (JetStream target); the notifications feed
// the release pipeline, carry no message id, and are deduplicated by bucket + key +
// ETag when MinIO (or a reconnect) delivers them again.
func TestReleasesFromMinIONotifications(t *testing.T) {
	s := newReleaseStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.minio = testenv.StartMinIONotifying(t, s.nats.URL, "sluice.releases.minio")
	s.bucket = "artifacts"
	s.minio.NotifyBucket(t, s.bucket)
	s.env = append(s.env,
		"SLUICE_S3_ENDPOINT="+s.minio.Endpoint,
		"SLUICE_S3_BUCKET="+s.bucket,
		"SLUICE_S3_ACCESS_KEY="+s.minio.AccessKey,
		"SLUICE_S3_SECRET_KEY="+s.minio.SecretKey,
	)
	s.start("ingress") // creates the release stream MinIO publishes into
	s.start("worker")

	// Capture what MinIO sends, to deliver it again later as a replay would.
	nc, err := nats.Connect(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var (
		mu       sync.Mutex
		captured [][]byte
	)
	sub, err := nc.Subscribe("sluice.releases.minio", func(m *nats.Msg) {
		mu.Lock()
		captured = append(captured, append([]byte(nil), m.Data...))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	put := func(key string, data []byte, meta map[string]string) {
		t.Helper()
		_, err := s.minio.Client(t).PutObject(t.Context(), s.bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{ContentType: "application/gzip", UserMetadata: meta})
		if err != nil {
			t.Fatalf("upload %s: %v", key, err)
		}
	}
	a, b, c := randomBytes(700_000, 21), randomBytes(12_345, 22), randomBytes(5_000, 23)
	put("minio/app-2.0.tar.gz", a, map[string]string{"Sluice-Channel": "stable", "Sluice-Sha256": sha(a)})
	put("minio/plain.bin", b, nil)
	put("minio/tampered.bin", c, map[string]string{"Sluice-Sha256": sha(a)}) // announced checksum is wrong

	e := s.waitEntry("minio/app-2.0.tar.gz", "verified", 30*time.Second)
	if e.SHA256 != sha(a) || e.Size != int64(len(a)) || e.Channel != "stable" || e.ContentType != "application/gzip" || e.ETag == "" {
		t.Fatalf("entry from a MinIO notification: %+v", e)
	}
	if e := s.waitEntry("minio/plain.bin", "verified", 30*time.Second); e.SHA256 != sha(b) {
		t.Fatalf("a notified object without a stated checksum is recorded with the one computed: %+v", e)
	}
	s.waitEntry("minio/tampered.bin", "rejected", 30*time.Second)
	if got, _ := s.entry("stable/latest"); got.Object != "minio/app-2.0.tar.gz" {
		t.Fatalf("stable/latest: %+v", got)
	}
	before := s.waitStats(10*time.Second, "three notifications recorded", func(st releaseStats) bool { return st.Catalog.Recorded == 3 })

	// MinIO replays after reconnects: deliver every notification twice more, without a
	// message id, straight into JetStream as MinIO does.
	mu.Lock()
	replay := append([][]byte(nil), captured...)
	mu.Unlock()
	if len(replay) != 3 {
		t.Fatalf("captured %d notifications, want 3", len(replay))
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, data := range replay {
			if _, err := js.Publish("sluice.releases.minio", data); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := s.waitStats(20*time.Second, "six replayed notifications seen as duplicates", func(st releaseStats) bool {
		return st.Backlog == 0 && st.Catalog.DuplicateDeliveries >= before.Catalog.DuplicateDeliveries+6
	})
	if st.Catalog.Recorded != before.Catalog.Recorded || st.Catalog.HashesComputed != before.Catalog.HashesComputed || st.Backlog != 0 {
		t.Fatalf("replayed notifications changed the catalog: before %+v, after %+v", before, st)
	}

	// A new upload under the same key is a new version: a new event, verified again.
	a2 := randomBytes(600_000, 24)
	put("minio/app-2.0.tar.gz", a2, map[string]string{"Sluice-Channel": "stable"})
	deadline := time.Now().Add(30 * time.Second)
	for {
		e2, _ := s.entry("minio/app-2.0.tar.gz")
		if e2.State == "verified" && e2.SHA256 == sha(a2) && e2.ETag != e.ETag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new version was not catalogued: %+v", e2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := s.stats(); st.Catalog.Recorded != 4 {
		t.Fatalf("stats after a new version: %+v, want 4 events recorded", st)
	}
}
