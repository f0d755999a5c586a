package catalog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// backends runs a test against a real redis-server and against the in-process
// Redis-protocol server the all-in-one embeds, each with a real JetStream (embedded
// nats-server) for the records: the catalog's scripts run on both.
func backends(t *testing.T, fn func(t *testing.T, c *catalog.Catalog)) {
	t.Run("redis-server", func(t *testing.T) {
		fn(t, openCatalog(t, jetStream(t, testenv.StartNATS(t)), testenv.StartRedis(t).Client(t)))
	})
	t.Run("embedded", func(t *testing.T) {
		fn(t, openCatalog(t, jetStream(t, testenv.StartNATS(t)), miniRedis(t)))
	})
}

func jetStream(t testing.TB, n *testenv.NATS) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func miniRedis(t testing.TB) *redis.Client {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func openCatalog(t testing.TB, js jetstream.JetStream, rdb redis.UniversalClient) *catalog.Catalog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := catalog.Open(ctx, js, rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// verified is the result of an event whose object matched, published at t0 + minutes.
func verified(identity, object, channel string, minutes int) catalog.Result {
	return catalog.Result{Identity: identity, Object: object, Size: 10, SHA256: strings.Repeat("a", 64),
		ETag: "e-" + identity, ContentType: "application/octet-stream",
		PublishedAt: t0.Add(time.Duration(minutes) * time.Minute), Channel: channel, State: catalog.StateVerified}
}

func record(t *testing.T, c *catalog.Catalog, r catalog.Result) (string, bool) {
	t.Helper()
	outcome, recorded, err := c.Record(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return outcome, recorded
}

func lookup(t *testing.T, c *catalog.Catalog, key string) catalog.Entry {
	t.Helper()
	e, err := c.Lookup(t.Context(), key)
	if err != nil {
		t.Fatalf("lookup %q: %v", key, err)
	}
	return e
}

func resolve(t *testing.T, c *catalog.Catalog, name string) (string, bool) {
	t.Helper()
	key, alias, err := c.Resolve(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return key, alias
}

// An event identity is recorded once however often it is delivered; a redelivery
// changes nothing and is counted as a duplicate.
func TestRecordIsExactlyOncePerEvent(t *testing.T) {
	backends(t, func(t *testing.T, c *catalog.Catalog) {
		r := verified("id:ci-1", "rel/a.tar.gz", "stable", 0)
		if outcome, recorded := record(t, c, r); !recorded || outcome != catalog.OutcomeVerified {
			t.Fatalf("first delivery: %q recorded=%v", outcome, recorded)
		}
		// The same identity again, even with another result, is the same event.
		again := r
		again.State, again.Reason = catalog.StateRejected, "sha256 mismatch"
		if outcome, recorded := record(t, c, again); recorded || outcome != catalog.OutcomeVerified {
			t.Fatalf("redelivery: %q recorded=%v, want the first outcome, not recorded", outcome, recorded)
		}
		if e := lookup(t, c, "rel/a.tar.gz"); e.State != catalog.StateVerified {
			t.Fatalf("entry after a redelivery: %+v", e)
		}
		if p, _ := c.Processed(t.Context(), "id:ci-1"); p != catalog.OutcomeVerified {
			t.Fatalf("processed outcome %q", p)
		}
		st, err := c.Stats(t.Context())
		if err != nil || st.Recorded != 1 || st.Verified != 1 || st.DuplicateDeliveries != 1 {
			t.Fatalf("stats %+v (%v), want 1 recorded, 1 verified, 1 duplicate delivery", st, err)
		}
	})
}

// Workers in parallel may finish an older event after a newer one for the same
// object: the older one is superseded, not written over the newer entry.
func TestOlderEventDoesNotReplaceNewer(t *testing.T) {
	backends(t, func(t *testing.T, c *catalog.Catalog) {
		record(t, c, verified("id:v2", "rel/tool.zip", "stable", 10))
		if outcome, recorded := record(t, c, verified("id:v1", "rel/tool.zip", "stable", 5)); !recorded || outcome != catalog.OutcomeSuperseded {
			t.Fatalf("older event: %q recorded=%v, want superseded", outcome, recorded)
		}
		if e := lookup(t, c, "rel/tool.zip"); e.ETag != "e-id:v2" {
			t.Fatalf("entry %+v, want the newer version", e)
		}
	})
}

// <channel>/latest follows the newest verified object of the channel; a rejected
// artifact never becomes the alias, and a rejected new version leaves the channel.
func TestAliasFollowsNewestVerified(t *testing.T) {
	backends(t, func(t *testing.T, c *catalog.Catalog) {
		if key, alias := resolve(t, c, "stable/latest"); alias || key != "stable/latest" {
			t.Fatalf("alias of an empty channel: %q %v, want the name unchanged", key, alias)
		}
		record(t, c, verified("id:1", "rel/app-1.0", "stable", 1))
		record(t, c, verified("id:2", "rel/app-1.1", "stable", 2))
		record(t, c, verified("id:b", "rel/app-2.0-beta", "beta", 3))
		if key, alias := resolve(t, c, "stable/latest"); !alias || key != "rel/app-1.1" {
			t.Fatalf("stable/latest = %q %v, want rel/app-1.1", key, alias)
		}
		bad := verified("id:3", "rel/app-1.2", "stable", 4)
		bad.State, bad.Reason = catalog.StateRejected, "sha256 mismatch"
		record(t, c, bad)
		if key, _ := resolve(t, c, "stable/latest"); key != "rel/app-1.1" {
			t.Fatalf("stable/latest = %q after a rejected 1.2, want rel/app-1.1", key)
		}
		// 1.1 itself republished with a bad checksum: it is rejected and leaves the channel.
		bad11 := verified("id:4", "rel/app-1.1", "stable", 5)
		bad11.State, bad11.Reason = catalog.StateRejected, "size mismatch"
		record(t, c, bad11)
		if key, _ := resolve(t, c, "stable/latest"); key != "rel/app-1.0" {
			t.Fatalf("stable/latest = %q after 1.1 was rejected, want rel/app-1.0", key)
		}
		if e := lookup(t, c, "rel/app-1.1"); e.State != catalog.StateRejected || e.Reason != "size mismatch" {
			t.Fatalf("entry of the rejected 1.1: %+v", e)
		}
		if key, alias := resolve(t, c, "Not A Channel/latest"); alias || key != "Not A Channel/latest" {
			t.Fatalf("resolve of an invalid channel: %q %v", key, alias)
		}
	})
}

// Accepted events show their objects as pending until a worker has a result, without
// hiding what the catalog already knows; a dead-lettered event says so on its pending
// entry, and the next result replaces the note.
func TestPendingAndDeadLettered(t *testing.T) {
	backends(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		record(t, c, verified("id:old", "rel/known.bin", "", 0))
		err := c.MarkPending(ctx, []catalog.Pending{
			{Object: "rel/new.bin", Size: 10, SHA256: strings.Repeat("b", 64), PublishedAt: t0, Channel: "stable"},
			{Object: "rel/known.bin", Size: 99, PublishedAt: t0.Add(time.Hour)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if e := lookup(t, c, "rel/new.bin"); e.State != catalog.StatePending || e.Channel != "stable" {
			t.Fatalf("new object: %+v, want pending", e)
		}
		if e := lookup(t, c, "rel/known.bin"); e.State != catalog.StateVerified || e.Size != 10 {
			t.Fatalf("known object: %+v, want the verified entry unchanged", e)
		}

		for _, key := range []string{"rel/new.bin", "rel/known.bin", "rel/never.bin"} {
			if err := c.NoteDeadLettered(ctx, key, "object not in the store"); err != nil {
				t.Fatalf("note dead letter on %s: %v", key, err)
			}
		}
		if e := lookup(t, c, "rel/new.bin"); e.State != catalog.StatePending || !strings.Contains(e.Reason, "dead-lettered (object not in the store)") {
			t.Fatalf("pending entry after its dead letter: %+v", e)
		}
		if e := lookup(t, c, "rel/known.bin"); e.Reason != "" {
			t.Fatalf("verified entry took the note: %+v", e)
		}
		if _, err := c.Lookup(ctx, "rel/never.bin"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("the note created an entry: %v", err)
		}

		// The replayed event verifies the object: the note is gone.
		record(t, c, verified("id:new", "rel/new.bin", "stable", 1))
		if e := lookup(t, c, "rel/new.bin"); e.State != catalog.StateVerified || e.Reason != "" {
			t.Fatalf("entry after the replay: %+v", e)
		}
	})
}
