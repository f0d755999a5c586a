package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func answer(t *testing.T, h http.HandlerFunc) (int, http.Header, Answer) {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var a Answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return rec.Code, rec.Header(), a
}

// Ready when every dependency answers; 503 naming the one that does not, with
// Retry-After; 503 draining once drained, whatever the dependencies say.
func TestProbe(t *testing.T) {
	down := errors.New("dial tcp 127.0.0.1:1: connection refused")
	var redisErr error
	var logged bytes.Buffer
	p := NewProbe(slog.New(slog.NewTextHandler(&logged, nil)),
		Check{Name: "nats", Ping: func(context.Context) error { return nil }},
		Check{Name: "redis", Ping: func(context.Context) error { return redisErr }},
	)
	code, _, a := answer(t, p.ServeHTTP)
	if code != http.StatusOK || a.Status != StatusReady || a.Checks["nats"] != "ok" || a.Checks["redis"] != "ok" {
		t.Errorf("all up: %d %+v", code, a)
	}
	redisErr = down
	code, h, a := answer(t, p.ServeHTTP)
	if code != http.StatusServiceUnavailable || a.Status != StatusUnavailable || a.Checks["redis"] != down.Error() ||
		h.Get("Retry-After") == "" || !slices.Equal(a.Failing(), []string{"redis"}) {
		t.Errorf("redis down: %d %v %+v", code, h, a)
	}
	// For clients: the failing check named, not its error.
	code, _, a = answer(t, p.Public().ServeHTTP)
	if code != http.StatusServiceUnavailable || a.Checks["redis"] != StatusUnavailable || a.Checks["nats"] != "ok" {
		t.Errorf("redis down, public: %d %+v", code, a)
	}
	if n := strings.Count(logged.String(), "readiness check failing"); n != 1 || !strings.Contains(logged.String(), "connection refused") {
		t.Errorf("the failure is logged %d times (want once, with its error): %s", n, logged.String())
	}
	redisErr = nil
	if code, _, _ := answer(t, p.ServeHTTP); code != http.StatusOK || !strings.Contains(logged.String(), "passing again") {
		t.Errorf("redis back: %d; log %s", code, logged.String())
	}
	p.Drain()
	if code, _, a := answer(t, p.ServeHTTP); code != http.StatusServiceUnavailable || a.Status != StatusDraining {
		t.Errorf("drained: %d %+v", code, a)
	}
	if code, _, a := answer(t, Live); code != http.StatusOK || a.Status != "ok" {
		t.Errorf("live: %d %+v", code, a)
	}
}

// A check that hangs fails when the answer's bound runs out, instead of holding the probe.
func TestProbeBoundsAHangingCheck(t *testing.T) {
	p := NewProbe(slog.New(slog.DiscardHandler), Check{Name: "storage", Ping: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	if code, _, a := answer(t, p.ServeHTTP); code != http.StatusServiceUnavailable || a.Checks["storage"] == "" {
		t.Errorf("%d %+v", code, a)
	}
}
