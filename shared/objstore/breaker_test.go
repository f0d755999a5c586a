package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Answers about objects, bad keys and callers giving up say nothing about the
// backend's health: however many there are, the breaker stays closed.
func TestBreakerIgnoresAnswersAndCallers(t *testing.T) {
	l := newLocal(t)
	b := NewBreaker(l, "local", BreakerOptions{ConsecutiveFailures: 2, MinRequests: 2})
	info := put(t, b, "a.txt", []byte("hello"))
	put(t, b, "a.txt", []byte("hello again"))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()

	ctx := t.Context()
	for range 10 {
		if _, err := b.Stat(ctx, "missing.txt"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat of a missing key: %v", err)
		}
		if _, err := b.Open(ctx, "a.txt", 0, -1, info.ETag); !errors.Is(err, ErrChanged) {
			t.Fatalf("Open with a stale ETag: %v", err)
		}
		if _, err := b.Open(ctx, "a.txt", 1000, 1, ""); err == nil {
			t.Fatal("Open beyond the end succeeded")
		}
		if _, err := b.Stat(ctx, "../etc/passwd"); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("Stat of a bad key: %v", err)
		}
		if _, err := b.Stat(canceled, "a.txt"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Stat with a canceled context: %v", err)
		}
		if err := b.Ping(expired); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ping with an expired context: %v", err)
		}
		if _, err := b.Put(ctx, "b.txt", errReader{errors.New("client went away")}, -1, ""); err == nil {
			t.Fatal("Put of a broken body succeeded")
		}
	}
	if got := b.State(); got != "closed" {
		t.Fatalf("breaker %s after answers and caller errors, want closed", got)
	}
}

func TestBreakerTripsOnConsecutiveFailuresAndRecovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBreaker(l, "disk", BreakerOptions{OpenTimeout: 200 * time.Millisecond})
	put(t, b, "a.txt", []byte("hello"))
	ctx := t.Context()

	if err := os.RemoveAll(dir); err != nil { // the volume goes away
		t.Fatal(err)
	}
	for i := range 5 {
		if got := b.State(); got != "closed" {
			t.Fatalf("breaker %s after %d failures, want closed until the 5th", got, i)
		}
		if _, err := b.Stat(ctx, "a.txt"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Stat with the directory gone: %v, want ErrUnavailable", err)
		}
	}
	if got := b.State(); got != "open" {
		t.Fatalf("breaker %s after 5 failures in a row, want open", got)
	}
	_, err = b.Stat(ctx, "a.txt")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Errorf("Stat through the open breaker: %v, want ErrUnavailable from the open breaker", err)
	}
	if _, err := b.Stat(ctx, "bad//key"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("a bad key through the open breaker: %v, want ErrInvalidKey (a client error, not a 503)", err)
	}

	if err := os.Mkdir(dir, 0o755); err != nil { // and comes back
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		_, err := b.Put(ctx, "a.txt", strings.NewReader("back"), 4, "")
		return err
	})
	if got := b.State(); got != "closed" {
		t.Errorf("breaker %s after a successful probe, want closed", got)
	}
}

func TestBreakerTripsOnFailureRatio(t *testing.T) {
	s := &outageStore{Store: newLocal(t)}
	put(t, s, "a.txt", []byte("hello"))
	b := NewBreaker(s, "flaky", BreakerOptions{})
	ctx := t.Context()
	// Every other call fails: never 5 in a row, but half of all calls.
	for i := range 21 {
		if got := b.State(); got != "closed" {
			t.Fatalf("breaker %s after %d calls, want closed until 20 have settled", got, i)
		}
		s.down.Store(i%2 == 0)
		_, _ = b.Stat(ctx, "a.txt")
	}
	if got := b.State(); got != "open" {
		t.Errorf("breaker %s with half of 21 calls failed, want open", got)
	}
}

// outageStore is a Store whose backend can be switched off, for failure patterns a
// real server cannot be made to produce on cue.
type outageStore struct {
	Store
	down atomic.Bool
}

func (s *outageStore) Stat(ctx context.Context, key string) (Info, error) {
	if s.down.Load() {
		return Info{}, fmt.Errorf("%w: switched off by the test", ErrUnavailable)
	}
	return s.Store.Stat(ctx, key)
}

// The full story against a real MinIO: it dies, the breaker opens and answers at
// once, clients canceling never trip it, and it comes back by itself; then MinIO
// hangs instead of dying, and the default call timeout turns the hang into failures.
func TestBreakerOverMinIO(t *testing.T) {
	s, m := newS3(t)
	info := put(t, s, "releases/app.tar.gz", []byte("release bytes"))
	b := NewBreaker(s, "minio", BreakerOptions{
		OpenTimeout: 300 * time.Millisecond,
		CallTimeout: 500 * time.Millisecond,
	})
	ctx := t.Context()
	if _, err := b.Stat(ctx, "releases/app.tar.gz"); err != nil {
		t.Fatalf("Stat with MinIO up: %v", err)
	}

	t.Run("outage", func(t *testing.T) {
		m.Stop()
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		for range 20 {
			if _, err := b.Stat(canceled, "releases/app.tar.gz"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Stat with a canceled context: %v", err)
			}
		}
		// Canceled while minio-go waits to retry the refused connection.
		for range 3 {
			midway, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			_, err := b.Open(midway, "releases/app.tar.gz", 0, -1, "")
			cancel()
			if err == nil {
				t.Fatal("Open succeeded with MinIO down")
			}
		}
		if got := b.State(); got != "closed" {
			t.Fatalf("breaker %s after only callers giving up, want closed", got)
		}

		for i := 0; b.State() == "closed"; i++ {
			if i == 5 {
				t.Fatal("breaker still closed after 5 failed calls")
			}
			if _, err := b.Stat(ctx, "releases/app.tar.gz"); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Stat with MinIO down: %v, want ErrUnavailable", err)
			}
		}
		start := time.Now()
		_, err := b.Open(ctx, "releases/app.tar.gz", 0, -1, "")
		if took := time.Since(start); took > 50*time.Millisecond {
			t.Errorf("the open breaker took %s to answer, want at once (< 50ms)", took)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Open through the open breaker: %v, want ErrUnavailable", err)
		}

		m.Start(t)
		eventually(t, 10*time.Second, func() error {
			_, err := b.Stat(ctx, "releases/app.tar.gz")
			return err
		})
		if got := b.State(); got != "closed" {
			t.Errorf("breaker %s after MinIO came back and a probe succeeded, want closed", got)
		}
		if got := readAll(t, b, "releases/app.tar.gz", 8, 5, info.ETag); string(got) != "bytes" {
			t.Errorf("read %q after recovery, want %q", got, "bytes")
		}
	})

	t.Run("hang", func(t *testing.T) {
		if err := m.Process.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// A signal is delivered in its own time: on a loaded machine MinIO may answer
		// once more after kill(2) returned. Go on once the kernel says it is stopped.
		stat := fmt.Sprintf("/proc/%d/stat", m.Process.Cmd.Process.Pid)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			raw, _ := os.ReadFile(stat)
			if f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:])); len(f) > 0 && f[0] == "T" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("minio not stopped 10 s after SIGSTOP: %s", raw)
			}
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = m.Process.Cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		defer resume()
		// Callers in a hurry give up before CallTimeout: their impatience is theirs.
		for range 6 {
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, err := b.Stat(short, "releases/app.tar.gz")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stat with a 50ms deadline against a hung MinIO: %v", err)
			}
		}
		if got := b.State(); got != "closed" {
			t.Fatalf("breaker %s after callers' short deadlines, want closed", got)
		}
		// Callers without a deadline get CallTimeout, and the silence counts.
		for i := 0; b.State() == "closed"; i++ {
			if i == 5 {
				t.Fatal("breaker still closed after 5 timed-out calls")
			}
			start := time.Now()
			_, err := b.Stat(ctx, "releases/app.tar.gz")
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Stat against a hung MinIO: %v, want ErrUnavailable", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Stat against a hung MinIO took %s; the call timeout did not apply", took)
			}
		}
		if err := b.Ping(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, gobreaker.ErrOpenState) {
			t.Errorf("Ping through the open breaker: %v", err)
		}
		resume()
		eventually(t, 10*time.Second, func() error { return b.Ping(ctx) })
		if got := b.State(); got != "closed" {
			t.Errorf("breaker %s after MinIO resumed, want closed", got)
		}
	})
}

// eventually retries fn until it succeeds, failing the test with its last error.
func eventually(t *testing.T, within time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
