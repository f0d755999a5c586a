package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/shared/queue"
)

// A server without room for the stream answers so at once; creation is retried until
// the caller's deadline, and the error says what the server said, not "context
// deadline exceeded".
func TestEnsureShowsTheServersReason(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), JetStreamMaxStore: 1 << 20, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_, err = queue.EnsureTickets(ctx, js, queue.StreamConfig{MaxBytes: 1 << 30})
	var ee *queue.EnsureError
	if !errors.As(err, &ee) {
		t.Fatalf("EnsureTickets on a server without room: %v, want an *EnsureError", err)
	}
	if !strings.Contains(err.Error(), "insufficient storage") || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q hides the server's reason", err)
	}
	t.Log(err)
	if ee.Attempts < 2 {
		t.Errorf("%d attempts in 1.5 s: the creation was not retried", ee.Attempts)
	}
}

// Failures that pass (a cluster settling, a race with another role creating the same
// stream) are retried until they do; a rejected configuration comes back at once.
func TestEnsureRetriesWhatPasses(t *testing.T) {
	calls := 0
	v, err := queue.Ensure(t.Context(), "create thing", func(ctx context.Context) (int, error) {
		calls++
		switch calls {
		case 1:
			return 0, &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}
		case 2:
			return 0, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
		case 3:
			return 0, context.DeadlineExceeded // this attempt's own timeout
		case 4:
			return 0, &jetstream.APIError{Code: 400, ErrorCode: 10065, Description: "subjects overlap with an existing stream"}
		}
		return 7, nil
	})
	if err != nil || v != 7 || calls != 5 {
		t.Fatalf("Ensure = %d, %v after %d calls; want 7, nil after 5", v, err, calls)
	}

	calls = 0
	_, err = queue.Ensure(t.Context(), "create thing", func(ctx context.Context) (int, error) {
		calls++
		return 0, &jetstream.APIError{Code: 400, ErrorCode: 10052, Description: "invalid stream config"}
	})
	if calls != 1 || err == nil || !strings.Contains(err.Error(), "invalid stream config") {
		t.Fatalf("a rejected configuration: %v after %d calls, want its error after 1", err, calls)
	}
}
