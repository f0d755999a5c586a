package catalog_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// A following catalog answers Recorded from its copy, without a message to NATS, and
// the copy follows what another process records (new entries, newer versions,
// removals); before the copy is complete it reads the bucket.
func TestFollowAnswersFromMemory(t *testing.T) {
	n := testenv.StartNATS(t)
	rdb := testenv.StartRedis(t).Client(t)
	writer := openCatalog(t, jetStream(t, n), rdb)
	readerJS := jetStream(t, n)
	reader := openCatalog(t, readerJS, rdb)

	record(t, writer, verified("e1", "rel/a", "", 1))
	// Not following yet: the bucket answers.
	if e, err := reader.Recorded(t.Context(), "rel/a"); err != nil || e.State != catalog.StateVerified {
		t.Fatalf("before following: %+v %v", e, err)
	}

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := reader.Follow(ctx, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("follow: %v", err)
		}
	})
	defer func() { stop(); wg.Wait() }()

	rejected := verified("e2", "rel/a", "", 2)
	rejected.State, rejected.Reason = catalog.StateRejected, "size 9, announced 10"
	record(t, writer, rejected)
	record(t, writer, verified("e3", "rel/b", "", 3))
	waitFor(t, func() bool {
		a, errA := reader.Recorded(t.Context(), "rel/a")
		_, errB := reader.Recorded(t.Context(), "rel/b")
		return errA == nil && a.State == catalog.StateRejected && errB == nil
	}, "the copy to show the rejection of rel/a and the new rel/b")

	sent := readerJS.Conn().Stats().OutMsgs
	for range 100 {
		if _, err := reader.Recorded(t.Context(), "rel/a"); err != nil {
			t.Fatal(err)
		}
		if _, err := reader.Recorded(t.Context(), "rel/none"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("an object never recorded: %v, want ErrNotFound", err)
		}
	}
	if more := readerJS.Conn().Stats().OutMsgs - sent; more != 0 {
		t.Errorf("200 reads from the copy sent %d messages to NATS, want none", more)
	}

	// An operator removes an entry: the copy forgets it too.
	kv, err := jetStream(t, n).KeyValue(t.Context(), catalog.EntryBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := kv.Delete(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool {
		_, err := reader.Recorded(t.Context(), "rel/b")
		return errors.Is(err, catalog.ErrNotFound)
	}, "the copy to forget removed entries")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// OpenEntries waits for the bucket another role creates, then reads and follows the
// entries like a full catalog.
func TestOpenEntriesWaitsForTheBucketAndReadsIt(t *testing.T) {
	n := testenv.StartNATS(t)
	js := jetStream(t, n)
	opened := make(chan *catalog.Catalog, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		c, err := catalog.OpenEntries(ctx, js)
		if err != nil {
			t.Errorf("open entries: %v", err)
		}
		opened <- c
	}()
	time.Sleep(300 * time.Millisecond) // a few attempts find no bucket
	select {
	case <-opened:
		t.Fatal("OpenEntries returned before the bucket existed")
	default:
	}
	writer := openCatalog(t, jetStream(t, n), testenv.StartRedis(t).Client(t))
	record(t, writer, verified("e1", "rel/a", "", 1))
	reader := <-opened
	if reader == nil {
		t.FailNow()
	}
	if e, err := reader.Recorded(t.Context(), "rel/a"); err != nil || e.State != catalog.StateVerified || e.SHA256 != strings.Repeat("a", 64) {
		t.Fatalf("read through OpenEntries: %+v %v", e, err)
	}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = reader.Follow(ctx, slog.New(slog.DiscardHandler)) })
	defer func() { stop(); wg.Wait() }()
	record(t, writer, verified("e2", "rel/b", "", 2))
	waitFor(t, func() bool {
		_, err := reader.Recorded(t.Context(), "rel/b")
		return err == nil
	}, "the followed copy to show rel/b")
}
