package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dl/sluice/api"
)

// A publisher announces releases in one NDJSON batch; malformed lines are reported by
// number while the valid events go in; the worker verifies each artifact and the
// catalog shows it; mismatches are rejected and never served; the channel alias
// follows the newest verified release and downloads resolve through it.
func TestReleasesPublishVerifyAndServe(t *testing.T) {
	s := newReleaseStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.startAll(1)
	s.createPublisherKey()

	v10, v11, bad, short := randomBytes(300_000, 1), randomBytes(200_000, 2), randomBytes(1000, 3), randomBytes(1000, 4)
	s.putObject("rel/app-1.0.tar.gz", v10)
	s.putObject("rel/bad.bin", bad)
	s.putObject("rel/short.bin", short)

	if status, _ := s.call(http.MethodPost, "/api/v1/releases", "", "application/json", []byte(`{}`)); status != http.StatusUnauthorized {
		t.Fatalf("publish without a key: %d, want 401", status)
	}
	good := releaseEvent{Object: "rel/app-1.0.tar.gz", SHA256: sha(v10), Size: int64(len(v10)), EventID: "ci-1", Channel: "stable"}
	batch := ndjson(
		good,
		`not json`,
		`{"object":"rel/x","size":1}`,
		releaseEvent{Object: "../etc/passwd", SHA256: sha(v10), Size: 1, EventID: "ci-x"},
		good, // a duplicate within the batch
		"",   // blank lines are skipped but counted
		releaseEvent{Object: "rel/bad.bin", SHA256: sha(v10), Size: int64(len(bad)), EventID: "ci-3", Channel: "stable"},
		releaseEvent{Object: "rel/short.bin", SHA256: sha(short), Size: 999, EventID: "ci-4"},
	)
	status, _, a := s.publish(batch)
	if status != http.StatusAccepted || a.Accepted != 3 || a.Duplicates != 1 {
		t.Fatalf("publish: %d %+v, want 202 with 3 accepted and 1 duplicate", status, a)
	}
	if len(a.Rejected) != 3 || a.Rejected[0].Line != 2 || a.Rejected[1].Line != 3 || a.Rejected[2].Line != 4 ||
		!strings.Contains(a.Rejected[1].Error, "sha256") || !strings.Contains(a.Rejected[2].Error, "..") {
		t.Fatalf("rejected lines: %+v", a.Rejected)
	}

	e := s.waitEntry("rel/app-1.0.tar.gz", "verified", 15*time.Second)
	if e.SHA256 != sha(v10) || e.Size != int64(len(v10)) || e.Channel != "stable" || e.ETag == "" ||
		e.ContentType == "" || e.PublishedAt.IsZero() || e.Reason != "" {
		t.Fatalf("catalog entry: %+v", e)
	}
	if e := s.waitEntry("rel/bad.bin", "rejected", 15*time.Second); !strings.Contains(e.Reason, "sha256 mismatch") {
		t.Fatalf("rejected entry without the reason: %+v", e)
	}
	if e := s.waitEntry("rel/short.bin", "rejected", 15*time.Second); !strings.Contains(e.Reason, "size mismatch") {
		t.Fatalf("rejected entry without the reason: %+v", e)
	}
	// A rejected artifact is never served.
	if status, body := s.downloadStatus("rel/bad.bin"); status != http.StatusConflict || !strings.Contains(body, "object_rejected") || !strings.Contains(body, "sha256 mismatch") {
		t.Fatalf("download of a rejected object: %d %s, want 409 object_rejected with the reason", status, body)
	}
	// Nor through the one-URL endpoint for plain clients.
	if status, raw := s.call(http.MethodGet, "/api/v1/files/rel/bad.bin", "", "", nil); status != http.StatusConflict || !strings.Contains(string(raw), "object_rejected") {
		t.Fatalf("/api/v1/files of a rejected object: %d %s, want 409 object_rejected", status, raw)
	}
	// Unpublished objects are served by default (SLUICE_REQUIRE_PUBLISHED=false).
	s.putObject("rel/unpublished.txt", []byte("hello"))
	if status, body := s.downloadStatus("rel/unpublished.txt"); status != http.StatusAccepted {
		t.Fatalf("download of an unpublished object: %d %s", status, body)
	}
	if status, raw := s.call(http.MethodGet, "/api/v1/objects/rel/unpublished.txt", "", "", nil); status != http.StatusNotFound || !strings.Contains(string(raw), "never published") {
		t.Fatalf("catalog of an unpublished object: %d %s, want 404 saying it was never published", status, raw)
	}

	// The alias follows the newest verified release of the channel.
	if e, _ := s.entry("stable/latest"); e.Object != "rel/app-1.0.tar.gz" {
		t.Fatalf("stable/latest is %+v, want rel/app-1.0.tar.gz", e)
	}
	s.putObject("rel/app-1.1.tar.gz", v11)
	status, _, a = s.publish(ndjson(releaseEvent{Object: "rel/app-1.1.tar.gz", SHA256: sha(v11), Size: int64(len(v11)), EventID: "ci-5", Channel: "stable"}))
	if status != http.StatusAccepted || a.Accepted != 1 {
		t.Fatalf("publish 1.1: %d %+v", status, a)
	}
	s.waitEntry("rel/app-1.1.tar.gz", "verified", 15*time.Second)
	if e, _ := s.entry("stable/latest"); e.Object != "rel/app-1.1.tar.gz" {
		t.Fatalf("stable/latest is %+v after 1.1 was verified", e)
	}
	tk := s.request("stable/latest")
	if tk.Object != "rel/app-1.1.tar.gz" {
		t.Fatalf("download of stable/latest got a ticket for %q", tk.Object)
	}
	sum, n, _ := download(t, s.follow(tk.ID, 15*time.Second))
	if sum != sha(v11) || n != int64(len(v11)) {
		t.Fatalf("stable/latest downloaded %d bytes with another checksum", n)
	}
	// /api/v1/files follows the alias too (the client follows its 303 to the stream).
	if status, raw := s.call(http.MethodGet, "/api/v1/files/stable/latest", "", "", nil); status != http.StatusOK || sha(raw) != sha(v11) {
		t.Fatalf("/api/v1/files/stable/latest: %d, %d bytes, want 200 with the bytes of 1.1", status, len(raw))
	}

	// Publishing the same batch again changes nothing: every event is a duplicate.
	status, _, a = s.publish(batch)
	if status != http.StatusAccepted || a.Accepted != 0 || a.Duplicates != 4 {
		t.Fatalf("republish: %d %+v, want 0 accepted and 4 duplicates", status, a)
	}
	st := s.stats()
	if st.Catalog.Recorded != 4 || st.Catalog.Verified != 2 || st.Catalog.Rejected != 2 || st.Catalog.HashesComputed != 3 {
		t.Fatalf("release stats %+v: want 4 events recorded (2 verified, 2 rejected), 3 hashes (size mismatches need none)", st)
	}
}

// With SLUICE_REQUIRE_PUBLISHED=true only verified objects are served.
func TestReleasesRequirePublished(t *testing.T) {
	s := newReleaseStack(t, stackOptions{Env: []string{"SLUICE_REQUIRE_PUBLISHED=true"}})
	s.dumpLogsOnFailure()
	s.start("ingress")
	s.createPublisherKey()
	data := randomBytes(50_000, 9)
	s.putObject("rel/tool.zip", data)

	if status, body := s.downloadStatus("rel/tool.zip"); status != http.StatusNotFound || !strings.Contains(body, "object_not_published") {
		t.Fatalf("download of an unpublished object: %d %s, want 404 object_not_published", status, body)
	}
	if status, _, a := s.publish(ndjson(releaseEvent{Object: "rel/tool.zip", SHA256: sha(data), Size: int64(len(data)), EventID: "t-1", Channel: "beta"})); status != http.StatusAccepted || a.Accepted != 1 {
		t.Fatalf("publish: %d %+v", status, a)
	}
	// No worker yet: the object is pending, shown as such and not served.
	if e, ok := s.entry("rel/tool.zip"); !ok || e.State != "pending" {
		t.Fatalf("entry before verification: %+v %v, want pending", e, ok)
	}
	if status, body := s.downloadStatus("rel/tool.zip"); status != http.StatusConflict || !strings.Contains(body, "object_pending") {
		t.Fatalf("download of a pending object: %d %s, want 409 object_pending", status, body)
	}
	s.start("worker")
	s.waitEntry("rel/tool.zip", "verified", 15*time.Second)
	if status, body := s.downloadStatus("beta/latest"); status != http.StatusAccepted || !strings.Contains(body, `"object":"rel/tool.zip"`) {
		t.Fatalf("download of beta/latest: %d %s", status, body)
	}
	// Replaced in storage without a new event: the new bytes are not verified. The
	// ingress notices within --stat-cache (1 s); until then its tickets name the
	// verified version, which the edge no longer finds (410 before any byte).
	s.putObject("rel/tool.zip", randomBytes(50_001, 10))
	deadline := time.Now().Add(time.Second + 3*time.Second)
	for {
		status, body := s.downloadStatus("rel/tool.zip")
		if status == http.StatusConflict && strings.Contains(body, "object_changed") {
			break
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("download of a changed object: %d %s, want 409 object_changed within --stat-cache", status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A poison event is dead-lettered after its attempts while good events keep flowing;
// an operator lists the dead letters and replays one once the cause is fixed.
func TestReleasesPoisonEventsAreDeadLetteredAndReplayed(t *testing.T) {
	s := newReleaseStack(t, stackOptions{Env: []string{"SLUICE_RELEASE_ATTEMPTS=3"}})
	s.dumpLogsOnFailure()
	s.startAll(1)
	s.createPublisherKey()
	good := randomBytes(10_000, 5)
	s.putObject("rel/good.bin", good)

	nc, err := nats.Connect(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("sluice.releases.api", []byte("this is not an event")); err != nil {
		t.Fatal(err)
	}
	missing := releaseEvent{Object: "rel/missing.bin", SHA256: sha(good), Size: int64(len(good)), EventID: "m-1", Channel: "stable"}
	lines := []any{missing}
	for i := range 500 {
		lines = append(lines, releaseEvent{Object: "rel/good.bin", SHA256: sha(good), Size: int64(len(good)), EventID: fmt.Sprintf("g-%d", i)})
	}
	start := time.Now()
	if status, _, a := s.publish(ndjson(lines...)); status != http.StatusAccepted || a.Accepted != 501 {
		t.Fatalf("publish: %d %+v", status, a)
	}
	// The good events do not wait for the failing one's retries (1 s, then 2 s).
	s.waitStats(20*time.Second, "good events recorded", func(st releaseStats) bool { return st.Catalog.Recorded >= 500 })
	goodDone := time.Since(start)
	st := s.waitStats(30*time.Second, "two dead letters and the good events counted", func(st releaseStats) bool { return st.Dead == 2 && st.Catalog.Recorded >= 500 })
	if st.Catalog.Recorded != 500 {
		t.Fatalf("stats %+v: want exactly the 500 good events recorded", st)
	}
	t.Logf("500 good events recorded in %s while a poison event retried", goodDone)

	status, raw := s.call(http.MethodGet, "/api/v1/admin/releases/dead", releaseAdminKey, "", nil)
	var list api.DeadLetters
	if status != http.StatusOK || json.Unmarshal(raw, &list) != nil || len(list.Dead) != 2 {
		t.Fatalf("dead letters: %d %s", status, raw)
	}
	var missingID uint64
	for _, d := range list.Dead {
		switch {
		case strings.Contains(d.Reason, "malformed"):
		case strings.Contains(d.Reason, "not in the store") && d.Attempts == 3 && strings.Contains(string(d.Event), "rel/missing.bin"):
			missingID = d.ID
		default:
			t.Fatalf("unexpected dead letter %+v (%s)", d, d.Event)
		}
	}
	if missingID == 0 {
		t.Fatalf("the missing object's event is not dead-lettered: %s", raw)
	}
	// Its entry stays pending, and says why, rather than "being verified" forever.
	if e, ok := s.entry("rel/missing.bin"); !ok || e.State != "pending" || !strings.Contains(e.Reason, "dead-lettered") {
		t.Fatalf("entry of the dead-lettered event: %+v %v, want pending with the dead letter as the reason", e, ok)
	}
	if status, _ := s.call(http.MethodGet, "/api/v1/admin/releases/dead", s.publisherKey, "", nil); status != http.StatusForbidden {
		t.Fatalf("dead letters with a publisher key: %d, want 403", status)
	}

	// The operator uploads the missing artifact and replays the event.
	s.putObject("rel/missing.bin", good)
	if status, raw := s.call(http.MethodPost, fmt.Sprintf("/api/v1/admin/releases/dead/%d/replay", missingID), releaseAdminKey, "", nil); status != http.StatusAccepted {
		t.Fatalf("replay: %d %s", status, raw)
	}
	s.waitEntry("rel/missing.bin", "verified", 15*time.Second)
	if status, _ := s.call(http.MethodPost, fmt.Sprintf("/api/v1/admin/releases/dead/%d/replay", missingID), releaseAdminKey, "", nil); status != http.StatusNotFound {
		t.Fatalf("second replay of the same dead letter: %d, want 404", status)
	}
	// The entry is written before the event's outcome and the counters (records.go):
	// wait for the counters to catch up rather than read them once.
	st = s.waitStats(15*time.Second, "the replayed event counted", func(st releaseStats) bool {
		return st.Catalog.Recorded >= 501 && st.Backlog == 0
	})
	if st.Dead != 1 || st.Catalog.Recorded != 501 {
		t.Fatalf("after the replay: %+v, want 1 dead letter left and 501 events recorded", st)
	}
}

// The release stream is bounded: past the bound the API answers 503 + Retry-After and
// says how much of the batch went in; sending the batch again later stores only the rest.
func TestReleasesQueueFullAnswers503(t *testing.T) {
	s := newReleaseStack(t, stackOptions{Env: []string{"SLUICE_MAX_RELEASE_EVENTS=100"}})
	s.dumpLogsOnFailure()
	s.start("ingress") // no worker: nothing drains the queue
	s.createPublisherKey()
	data := randomBytes(1000, 6)
	s.putObject("rel/one.bin", data)
	var lines []any
	for i := range 300 {
		lines = append(lines, releaseEvent{Object: "rel/one.bin", SHA256: sha(data), Size: int64(len(data)), EventID: fmt.Sprintf("f-%d", i)})
	}
	batch := ndjson(lines...)
	status, retry, a := s.publish(batch)
	if status != http.StatusServiceUnavailable || retry == "" || a.Code != "release_queue_full" || a.Accepted != 100 || a.NotAccepted != 200 {
		t.Fatalf("publish past the bound: %d Retry-After %q %+v, want 503 + Retry-After, 100 accepted, 200 not", status, retry, a)
	}
	s.start("worker")
	s.waitStats(30*time.Second, "queue drained", func(st releaseStats) bool { return st.Catalog.Recorded == 100 && st.Backlog == 0 })
	// The client sends the whole batch again until it is taken: what was stored before
	// comes back as duplicates, and every event is stored exactly once in the end.
	accepted := 0
	for attempt := 1; ; attempt++ {
		status, retry, a = s.publish(batch)
		accepted += a.Accepted
		if status == http.StatusAccepted {
			break
		}
		if status != http.StatusServiceUnavailable || retry == "" || attempt == 50 {
			t.Fatalf("publish again (attempt %d): %d Retry-After %q %+v", attempt, status, retry, a)
		}
		time.Sleep(200 * time.Millisecond) // a real client waits Retry-After
	}
	if accepted != 200 {
		t.Fatalf("the retries stored %d new events, want the 200 refused at first", accepted)
	}
	s.waitStats(30*time.Second, "all 300 recorded", func(st releaseStats) bool { return st.Catalog.Recorded == 300 && st.Backlog == 0 })
	if st := s.stats(); st.Catalog.HashesComputed != 1 {
		t.Fatalf("stats %+v: one object version must be hashed once", st)
	}
}
