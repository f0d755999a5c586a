package workers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/workers"
)

// outcomes counts the outcomes a release worker reports.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) add(outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[outcome]++
}

func (o *outcomes) get(outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[outcome]
}

// A release worker over redis-server, an in-process JetStream and objects on local
// disk verifies an event whose size and SHA-256 match the stored object, rejects one
// whose hash does not, and dead-letters a malformed one with the reason, once each.
func TestReleasesVerifyRejectAndDeadLetter(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	body := []byte("release 1.0 contents\n")
	if err := os.MkdirAll(filepath.Join(dir, "rel"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.tar.gz", "tampered.tar.gz"} {
		if err := os.WriteFile(filepath.Join(dir, "rel", name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	discard := slog.New(slog.DiscardHandler)
	store, err := objstore.NewLocal(dir, objstore.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	js := testenv.StartNATS(t).JetStream(t)
	consumer, err := queue.EnsureReleases(ctx, js, queue.ReleaseStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(ctx, js, testenv.StartRedis(t).Client(t), catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dead := queue.NewDeadLetters(js)
	var seen outcomes
	w := workers.NewReleases(workers.ReleasesConfig{
		Consumer: consumer, Store: store, Catalog: cat, Dead: dead,
		Parallel: 2, RetryDelay: 50 * time.Millisecond, Logger: discard, OnOutcome: seen.add,
	})
	run(t, w.Run)

	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	publish := func(ev queue.ReleaseEvent) {
		t.Helper()
		ev.AcceptedAt = time.Now()
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, queue.ReleaseAPISubject, raw, jetstream.WithMsgID(queue.MsgID(ev.Identity))); err != nil {
			t.Fatal(err)
		}
	}
	publish(queue.ReleaseEvent{Identity: "id:v1", ReleaseEvent: api.ReleaseEvent{EventID: "v1", Object: "rel/app.tar.gz", SHA256: good, Size: int64(len(body))}})
	publish(queue.ReleaseEvent{Identity: "id:v1-bad", ReleaseEvent: api.ReleaseEvent{EventID: "v1-bad", Object: "rel/tampered.tar.gz",
		SHA256: strings.Repeat("0", 64), Size: int64(len(body))}})
	if _, err := js.Publish(ctx, queue.ReleaseAPISubject, []byte(`{"identity": "id:broken", "object": `)); err != nil {
		t.Fatal(err)
	}

	eventually(t, 20*time.Second, "three events processed", func() bool {
		processed, _, deadN := w.Counts()
		return processed == 2 && deadN == 1
	})
	entry, err := cat.Lookup(ctx, "rel/app.tar.gz")
	if err != nil || entry.State != catalog.StateVerified || entry.SHA256 != good || entry.Size != int64(len(body)) {
		t.Errorf("the matching event's entry: %+v %v", entry, err)
	}
	entry, err = cat.Lookup(ctx, "rel/tampered.tar.gz")
	if err != nil || entry.State != catalog.StateRejected || !strings.Contains(entry.Reason, "sha256 mismatch") {
		t.Errorf("the mismatching event's entry: %+v %v", entry, err)
	}
	letters, err := dead.List(ctx, 0, 10)
	if err != nil || len(letters) != 1 {
		t.Fatalf("dead letters: %+v %v", letters, err)
	}
	if l := letters[0]; !strings.Contains(l.Reason, "malformed event") || l.Subject != queue.ReleaseAPISubject || l.Attempts != 1 {
		t.Errorf("dead letter %+v: want the reason, the subject and one attempt", l)
	}
	if seen.get("dead_lettered") != 1 || seen.get(catalog.OutcomeVerified) != 1 || seen.get(catalog.OutcomeRejected) != 1 {
		t.Errorf("outcomes reported: %v", seen.n)
	}

	// The same event again, past JetStream's own deduplication (no message id, as a
	// copy published after the duplicate window would be), is recorded once.
	raw, err := json.Marshal(queue.ReleaseEvent{Identity: "id:v1", ReleaseEvent: api.ReleaseEvent{EventID: "v1", Object: "rel/app.tar.gz",
		SHA256: good, Size: int64(len(body))}, AcceptedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, queue.ReleaseAPISubject, raw); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the repeated event taken as a duplicate", func() bool {
		_, duplicates, _ := w.Counts()
		return duplicates == 1
	})
	if processed, _, deadN := w.Counts(); processed != 2 || deadN != 1 {
		t.Errorf("after a repeated event: processed %d, dead %d", processed, deadN)
	}
}
