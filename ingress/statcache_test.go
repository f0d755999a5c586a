package ingress

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// countedStore is a real local store that counts its Stats and can hold their
// answers until release is closed.
type countedStore struct {
	*objstore.Local
	stats   atomic.Int64
	release chan struct{} // nil: answer at once
}

func (s *countedStore) Stat(ctx context.Context, key string) (objstore.Info, error) {
	s.stats.Add(1)
	info, err := s.Local.Stat(ctx, key)
	if s.release != nil {
		<-s.release
	}
	return info, err
}

func newCountedStore(t *testing.T) (*countedStore, string) {
	t.Helper()
	dir := t.TempDir()
	local, err := objstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &countedStore{Local: local}, dir
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A burst of tickets for one object costs one Stat; the answer is asked again once
// the TTL has passed, and a missing object or a failure is never remembered.
func TestStatCacheAsksOncePerObjectAndTTL(t *testing.T) {
	store, dir := newCountedStore(t)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := &statCache{objects: store, ttl: time.Second, now: clock.Now}
	ctx := t.Context()

	if _, _, err := c.stat(ctx, "app.iso"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("stat of a missing object: %v, want ErrNotFound", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.iso"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Uploaded just after: found at once, not hidden by the miss before.
	store.stats.Store(0)
	store.release = make(chan struct{})
	var wg sync.WaitGroup
	infos := make([]objstore.Info, 64)
	for i := range infos {
		wg.Go(func() {
			info, _, err := c.stat(ctx, "app.iso")
			if err != nil {
				t.Error(err)
			}
			infos[i] = info
		})
	}
	time.Sleep(50 * time.Millisecond) // let the burst gather behind the first Stat
	close(store.release)
	wg.Wait()
	store.release = nil
	for _, info := range infos {
		if info.Size != 2 || info.ETag == "" {
			t.Fatalf("a caller of the shared Stat got %+v", info)
		}
	}
	if n := store.stats.Load(); n != 1 {
		t.Errorf("64 concurrent stats of one object asked the store %d times, want 1", n)
	}
	if _, _, err := c.stat(ctx, "app.iso"); err != nil || store.stats.Load() != 1 {
		t.Errorf("a stat within the TTL asked the store (%d stats, %v)", store.stats.Load(), err)
	}

	if err := os.WriteFile(filepath.Join(dir, "app.iso"), []byte("v2 is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Second)
	if info, _, err := c.stat(ctx, "app.iso"); err != nil || info.Size != 12 {
		t.Errorf("after the TTL: %+v %v, want the new version (12 bytes)", info, err)
	}
}

// An upload through the ingress forgets the object, even while a Stat that started
// before the upload is still out: its older answer is not remembered.
func TestStatCacheForgetWinsOverAStatInFlight(t *testing.T) {
	store, dir := newCountedStore(t)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := &statCache{objects: store, ttl: time.Hour, now: clock.Now}
	ctx := t.Context()
	path := filepath.Join(dir, "app.iso")
	if err := os.WriteFile(path, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	store.release = make(chan struct{})
	done := make(chan objstore.Info)
	go func() {
		info, _, _ := c.stat(ctx, "app.iso")
		done <- info
	}()
	for store.stats.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The Stat has looked (its answer is v1's, whenever it returns); then the upload
	// replaces the object and forgets it.
	if err := os.WriteFile(path, []byte("v2 is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.forget("app.iso")
	close(store.release)
	if old := <-done; old.Size != 2 {
		t.Fatalf("the Stat in flight answered %+v, want v1's", old)
	}
	store.release = nil
	if info, _, err := c.stat(ctx, "app.iso"); err != nil || info.Size != 12 {
		t.Errorf("after the upload: %+v %v, want the new version (12 bytes)", info, err)
	}
}

// With a TTL of zero every ticket asks the store.
func TestStatCacheOff(t *testing.T) {
	store, dir := newCountedStore(t)
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &statCache{objects: store, now: time.Now}
	for range 3 {
		if _, _, err := c.stat(t.Context(), "a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.stats.Load(); n != 3 {
		t.Errorf("3 stats without a cache asked the store %d times", n)
	}
}

// A remembered version the catalog contradicts is asked again once; the store's
// answer, even if it still differs (the object changed behind the catalog), is then
// kept for the TTL like any other, so a changed object costs one recheck per TTL.
func TestStatCacheRecheckIsOncePerTTL(t *testing.T) {
	store, dir := newCountedStore(t)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := &statCache{objects: store, ttl: time.Second, now: clock.Now}
	ctx := t.Context()
	path := filepath.Join(dir, "app.iso")
	if err := os.WriteFile(path, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, remembered, err := c.stat(ctx, "app.iso"); err != nil || remembered {
		t.Fatalf("first stat: remembered=%v %v, want asked", remembered, err)
	}
	if err := os.WriteFile(path, []byte("v2 is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, remembered, err := c.stat(ctx, "app.iso")
	if err != nil || !remembered || info.Size != 2 {
		t.Fatalf("within the TTL: %+v remembered=%v %v, want v1 remembered", info, remembered, err)
	}
	if info, err = c.recheck(ctx, "app.iso"); err != nil || info.Size != 12 {
		t.Fatalf("recheck: %+v %v, want v2", info, err)
	}
	for range 3 {
		info, remembered, err = c.stat(ctx, "app.iso")
		if err != nil || remembered || info.Size != 12 {
			t.Fatalf("after the recheck: %+v remembered=%v %v, want v2, not to be rechecked again", info, remembered, err)
		}
	}
	if n := store.stats.Load(); n != 2 {
		t.Errorf("the store was asked %d times, want 2 (the first stat and the recheck)", n)
	}
}
