package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
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
	p := NewProbe(
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
	redisErr = nil
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
	p := NewProbe(Check{Name: "storage", Ping: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	if code, _, a := answer(t, p.ServeHTTP); code != http.StatusServiceUnavailable || a.Checks["storage"] == "" {
		t.Errorf("%d %+v", code, a)
	}
}
