package ingress_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// When the catalog's NATS (its records) or Redis (its aliases and pending entries)
// does not answer, GET /api/v1/objects/{key} says which, with 503 and Retry-After,
// never a 500.
func TestCatalogOutageNamesTheDependency(t *testing.T) {
	n := testenv.StartNATS(t)
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Redis on a port nobody listens on: every command fails at once.
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cat, err := catalog.Open(ctx, js, rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ingress.New(ingress.Config{
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Releases: ingress.ReleasesConfig{Catalog: cat},
	}).Handler())
	t.Cleanup(srv.Close)

	get := func(path string) (int, string, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error, Code string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Retry-After"), body.Code, body.Error
	}
	check := func(path, dependency string) {
		t.Helper()
		status, retry, code, msg := get(path)
		if status != http.StatusServiceUnavailable || retry == "" || code != dependency+"_unavailable" ||
			!strings.Contains(msg, dependency+" is not answering") {
			t.Fatalf("GET %s: %d Retry-After %q %s %q, want 503 %s_unavailable naming it", path, status, retry, code, msg, dependency)
		}
	}
	// NATS answers (no record), Redis does not (the pending entry cannot be read).
	check("/api/v1/objects/rel/app.tar.gz", catalog.DependencyRedis)
	n.Stop()
	check("/api/v1/objects/rel/app.tar.gz", catalog.DependencyNATS)
}
