package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// history records what a release history leaves in the catalog: stable 1.0 and 1.1
// verified, 1.2 rejected for a wrong SHA-256, a beta verified, and 1.0 republished
// with a wrong size (rejected; it leaves the channel). It returns every entry, the
// aliases and the event identities as they are before anything is lost.
type snapshot struct {
	entries    map[string]catalog.Entry
	aliases    map[string]string
	identities []string
}

func recordHistory(t *testing.T, c *catalog.Catalog) snapshot {
	t.Helper()
	results := []catalog.Result{
		verified("id:1.0", "rel/app-1.0", "stable", 1),
		verified("id:1.1", "rel/app-1.1", "stable", 2),
		verified("id:1.2", "rel/app-1.2", "stable", 3),
		verified("id:b1", "rel/app-2.0-beta", "beta", 4),
		verified("id:1.0-again", "rel/app-1.0", "stable", 5),
	}
	results[2].State, results[2].Reason = catalog.StateRejected, "sha256 mismatch: the event says aaaa, the stored object has bbbb"
	results[4].State, results[4].Reason = catalog.StateRejected, "size mismatch"
	s := snapshot{entries: map[string]catalog.Entry{}, aliases: map[string]string{}}
	for _, r := range results {
		record(t, c, r)
		s.identities = append(s.identities, r.Identity)
	}
	for _, key := range []string{"rel/app-1.0", "rel/app-1.1", "rel/app-1.2", "rel/app-2.0-beta"} {
		s.entries[key] = lookup(t, c, key)
	}
	for _, name := range []string{"stable/latest", "beta/latest"} {
		key, alias := resolve(t, c, name)
		if !alias {
			t.Fatalf("%s is not an alias before the wipe", name)
		}
		s.aliases[name] = key
	}
	if s.aliases["stable/latest"] != "rel/app-1.1" || s.entries["rel/app-1.2"].State != catalog.StateRejected {
		t.Fatalf("history recorded wrongly: %+v", s)
	}
	return s
}

// checkSnapshot asserts that the catalog answers exactly as it did when s was taken.
func checkSnapshot(t *testing.T, c *catalog.Catalog, s snapshot) {
	t.Helper()
	for key, want := range s.entries {
		if got := lookup(t, c, key); !reflect.DeepEqual(got, want) {
			t.Errorf("entry of %s after the wipe:\n got %+v\nwant %+v", key, got, want)
		}
	}
	for name, want := range s.aliases {
		if got, alias := resolve(t, c, name); !alias || got != want {
			t.Errorf("%s after the wipe = %q (alias %v), want %q", name, got, alias, want)
		}
	}
	for _, id := range s.identities {
		if p, err := c.Processed(t.Context(), id); err != nil || p == "" {
			t.Errorf("event %s forgotten after the wipe: %q %v", id, p, err)
		}
	}
	// A redelivered event is still a duplicate, and an older event for the rejected
	// object cannot make it acceptable.
	if outcome, recorded := record(t, c, verified("id:1.1", "rel/app-1.1", "stable", 2)); recorded || outcome != catalog.OutcomeVerified {
		t.Errorf("redelivery after the wipe: %q recorded=%v, want the first outcome, not recorded", outcome, recorded)
	}
	if outcome, _ := record(t, c, verified("id:1.2-older", "rel/app-1.2", "stable", 0)); outcome != catalog.OutcomeSuperseded {
		t.Errorf("an older event for the rejected object: %q, want superseded", outcome)
	}
	if e := lookup(t, c, "rel/app-1.2"); e.State != catalog.StateRejected {
		t.Errorf("the rejected object after the wipe: %+v", e)
	}
	// A new release after the wipe moves the alias as before.
	record(t, c, verified("id:1.3", "rel/app-1.3", "stable", 10))
	if key, _ := resolve(t, c, "stable/latest"); key != "rel/app-1.3" {
		t.Errorf("stable/latest after a new release = %q, want rel/app-1.3", key)
	}
}

// Redis is wiped (FLUSHALL) after verified, rejected and aliased entries were
// recorded: every entry, alias, rejection and processed event comes back exactly.
func TestRecordsSurviveRedisFlush(t *testing.T) {
	for name, rdb := range map[string]func(t *testing.T) redis.UniversalClient{
		"redis-server": func(t *testing.T) redis.UniversalClient { return testenv.StartRedis(t).Client(t) },
		"embedded":     func(t *testing.T) redis.UniversalClient { return miniRedis(t) },
	} {
		t.Run(name, func(t *testing.T) {
			r := rdb(t)
			c := openCatalog(t, jetStream(t, testenv.StartNATS(t)), r)
			s := recordHistory(t, c)
			if err := r.FlushAll(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, c, s)
		})
	}
}

// A brand-new Redis (a restart without persistence, or the all-in-one's embedded one
// after a restart) behind a new process: the catalog is the same.
func TestRecordsSurviveANewRedis(t *testing.T) {
	js := jetStream(t, testenv.StartNATS(t))
	s := recordHistory(t, openCatalog(t, js, testenv.StartRedis(t).Client(t)))
	t.Run("redis-server", func(t *testing.T) {
		checkSnapshot(t, openCatalog(t, js, testenv.StartRedis(t).Client(t)), s)
	})
}

// Parallel workers (several processes) record events for the same objects, each
// event delivered twice at once: every identity is recorded exactly once, and each
// object ends with its newest event's entry whatever the order they finished in.
func TestParallelWorkersRecordExactlyOnce(t *testing.T) {
	js := jetStream(t, testenv.StartNATS(t))
	rdb := testenv.StartRedis(t).Client(t)
	var workers []*catalog.Catalog
	for range 4 {
		workers = append(workers, openCatalog(t, js, rdb))
	}
	const events = 200
	objects := []string{"rel/hot-a.bin", "rel/hot-b.bin"}
	rng := rand.New(rand.NewPCG(7, 11))
	var results []catalog.Result
	newest := map[string]catalog.Result{}
	for i, minute := range rng.Perm(events) {
		r := verified(fmt.Sprintf("id:e%d", i), objects[i%len(objects)], "stable", minute)
		if i%7 == 0 {
			r.State, r.Reason = catalog.StateRejected, "sha256 mismatch"
		}
		results = append(results, r)
		if r.PublishedAt.After(newest[r.Object].PublishedAt) {
			newest[r.Object] = r
		}
	}
	var (
		mu       sync.Mutex
		recorded int
		wg       sync.WaitGroup
	)
	work := make(chan catalog.Result)
	for w := range 16 {
		c := workers[w%len(workers)]
		wg.Go(func() {
			for r := range work {
				_, ok, err := c.Record(context.Background(), r)
				if err != nil {
					t.Error(err)
					continue
				}
				if ok {
					mu.Lock()
					recorded++
					mu.Unlock()
				}
			}
		})
	}
	for _, r := range results {
		work <- r
		work <- r // the twin delivery, taken by another goroutine
	}
	close(work)
	wg.Wait()
	if recorded != events {
		t.Fatalf("%d events recorded for %d distinct identities delivered twice", recorded, events)
	}
	c := workers[0]
	for _, r := range results {
		if p, _ := c.Processed(t.Context(), r.Identity); p == "" {
			t.Fatalf("event %s not remembered", r.Identity)
		}
	}
	latest := ""
	var latestAt time.Time
	for _, object := range objects {
		want := newest[object]
		if e := lookup(t, c, object); e.ETag != want.ETag || e.State != want.State {
			t.Errorf("entry of %s: %+v, want the newest event's (%s, %s)", object, e, want.ETag, want.State)
		}
		if want.State == catalog.StateVerified && want.PublishedAt.After(latestAt) {
			latest, latestAt = object, want.PublishedAt
		}
	}
	key, alias := resolve(t, c, "stable/latest")
	if latest == "" && alias || latest != "" && key != latest {
		t.Errorf("stable/latest = %q (alias %v), want %q", key, alias, latest)
	}
	st, err := c.Stats(t.Context())
	if err != nil || st.Recorded != events || st.DuplicateDeliveries != events {
		t.Errorf("stats %+v (%v), want %d recorded and %d duplicate deliveries", st, err, events, events)
	}
}

// deadRedis is a client of a port nobody listens on: every command fails at once.
func deadRedis(t *testing.T) redis.UniversalClient {
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// A worker that wrote the entry but failed before the event's outcome (here: Redis
// went away in between) leaves the event unrecorded; its redelivery completes it, once.
func TestRecordCompletesAfterAFailureMidway(t *testing.T) {
	js := jetStream(t, testenv.StartNATS(t))
	broken := openCatalog(t, js, deadRedis(t))
	healthy := openCatalog(t, js, testenv.StartRedis(t).Client(t))
	r := verified("id:mid", "rel/mid.bin", "stable", 1)
	_, _, err := broken.Record(t.Context(), r)
	var ue *catalog.UnavailableError
	if !errors.As(err, &ue) || ue.Dependency != catalog.DependencyRedis || !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("record with Redis gone: %v, want an unavailable error naming redis", err)
	}
	if p, _ := healthy.Processed(t.Context(), r.Identity); p != "" {
		t.Fatalf("the half-done event counts as processed (%q): its redelivery would be dropped", p)
	}
	if outcome, recorded := record(t, healthy, r); !recorded || outcome != catalog.OutcomeVerified {
		t.Fatalf("redelivery: %q recorded=%v, want verified and recorded", outcome, recorded)
	}
	if outcome, recorded := record(t, healthy, r); recorded || outcome != catalog.OutcomeVerified {
		t.Fatalf("second redelivery: %q recorded=%v, want a duplicate", outcome, recorded)
	}
	if key, _ := resolve(t, healthy, "stable/latest"); key != "rel/mid.bin" {
		t.Fatalf("stable/latest = %q", key)
	}
	if st, _ := healthy.Stats(t.Context()); st.Recorded != 1 || st.Verified != 1 {
		t.Fatalf("stats %+v, want the event counted once", st)
	}
}

// When NATS (the records) or Redis (the derived state) does not answer, the error
// says which.
func TestUnavailableNamesTheDependency(t *testing.T) {
	n := testenv.StartNATS(t)
	js := jetStream(t, n)
	c := openCatalog(t, js, deadRedis(t))
	dependency := func(err error) string {
		var ue *catalog.UnavailableError
		if !errors.Is(err, catalog.ErrUnavailable) || !errors.As(err, &ue) {
			t.Fatalf("%v is not an unavailable error", err)
		}
		return ue.Dependency
	}
	// No record: the pending entry is looked for in Redis.
	if _, err := c.Lookup(t.Context(), "rel/x"); dependency(err) != catalog.DependencyRedis {
		t.Fatalf("lookup with Redis gone: %v", err)
	}
	if _, _, err := c.Verified(t.Context(), "rel/x", "e"); dependency(err) != catalog.DependencyRedis {
		t.Fatalf("verified with Redis gone: %v", err)
	}
	n.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := c.Lookup(ctx, "rel/x"); dependency(err) != catalog.DependencyNATS {
		t.Fatalf("lookup with NATS gone: %v", err)
	}
	if _, err := c.Processed(ctx, "id:x"); dependency(err) != catalog.DependencyNATS {
		t.Fatalf("processed with NATS gone: %v", err)
	}
}

// A cache that is wrong about a channel (a failover that kept some writes and lost
// others, an operator's mistake) is corrected by Resolve from the records: a rejected
// or unknown object on top of the set is never the answer.
func TestResolveHealsAWrongAliasCache(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	c := openCatalog(t, jetStream(t, testenv.StartNATS(t)), rdb)
	recordHistory(t, c)
	ctx := t.Context()
	set := "sluice:{cat}:ch:stable"
	future := float64(t0.Add(time.Hour).UnixMicro())
	if err := rdb.ZAdd(ctx, set, redis.Z{Score: future, Member: "rel/app-1.2"}, redis.Z{Score: future + 1, Member: "rel/ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	if key, _ := resolve(t, c, "stable/latest"); key != "rel/app-1.1" {
		t.Fatalf("stable/latest with a wrong cache = %q, want rel/app-1.1", key)
	}
	members, err := rdb.ZRange(ctx, set, 0, -1).Result()
	if err != nil || !reflect.DeepEqual(members, []string{"rel/app-1.1"}) {
		t.Fatalf("channel set after the correction: %v %v, want only rel/app-1.1", members, err)
	}
	// The set itself lost with the marker: rebuilt from the records.
	if err := rdb.Del(ctx, set, "sluice:{cat}:gen").Err(); err != nil {
		t.Fatal(err)
	}
	if key, _ := resolve(t, c, "stable/latest"); key != "rel/app-1.1" {
		t.Fatalf("stable/latest after the set was lost = %q, want rel/app-1.1", key)
	}
}
