package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/client"
)

// A server that refuses a line the batch does not have (no real ingress does) makes
// sluice publish fail naming that line, not panic.
func TestPublishRejectedLineOutOfTheBatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(api.ReleaseResult{Accepted: 1, Rejected: []api.RejectedLine{{Line: 5, Error: "bad"}}})
	}))
	t.Cleanup(srv.Close)
	cl, err := client.New(srv.URL, client.Options{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	c := &publishConfig{clientConfig: clientConfig{Server: srv.URL}}
	events := []client.ReleaseEvent{{Object: "rel/a", SHA256: strings.Repeat("a", 64), Size: 1}}
	err = announce(t.Context(), c, cl, events, &publishOutput{w: io.Discard})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitFailure || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("announce: %v, want exit %d naming line 5", err, exitFailure)
	}
}

// Without a key, sluice publish stops before it opens or sends anything (exit 8).
func TestPublishNeedsAKey(t *testing.T) {
	c := &publishConfig{clientConfig: clientConfig{Server: "http://127.0.0.1:1"}, Progress: "auto"}
	err := runPublish(t.Context(), c, []string{"does-not-exist"}, &publishOutput{w: io.Discard}, func(string) string { return "" })
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitAuth || !strings.Contains(err.Error(), keySource) {
		t.Fatalf("runPublish without a key: %v, want exit %d naming %s", err, exitAuth, keySource)
	}
}
