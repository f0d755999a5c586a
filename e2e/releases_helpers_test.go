package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

const releaseAdminKey = "slk_releasesadmin_e2e0123456789"

// releaseStack is a stack with an operator key and a publisher key.
type releaseStack struct {
	*stack
	publisherKey string
}

func newReleaseStack(t *testing.T, o stackOptions) *releaseStack {
	t.Helper()
	o.Env = append([]string{"SLUICE_ADMIN_KEY=" + releaseAdminKey}, o.Env...)
	return &releaseStack{stack: newStack(t, o)}
}

// createPublisherKey asks the admin API for a publisher key (the ingress must run).
func (s *releaseStack) createPublisherKey() {
	s.t.Helper()
	var out struct {
		Key string `json:"key"`
	}
	status, raw := s.call(http.MethodPost, "/api/v1/admin/keys", releaseAdminKey, "application/json", []byte(`{"scope":"publisher","tenant":"ci"}`))
	if status != http.StatusCreated || json.Unmarshal(raw, &out) != nil {
		s.t.Fatalf("create publisher key: %d %s", status, raw)
	}
	s.publisherKey = out.Key
}

// call sends one request to the ingress and returns the status and body.
func (s *releaseStack) call(method, path, key, contentType string, body []byte) (int, []byte) {
	s.t.Helper()
	status, _, raw := s.callH(method, path, key, contentType, body)
	return status, raw
}

func (s *releaseStack) callH(method, path, key, contentType string, body []byte) (int, http.Header, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.ingressURL+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// publishAnswer is the answer to a batch: its result, or problem details carrying
// the same counts and not_accepted.
type publishAnswer struct {
	api.ReleaseResult
	api.Problem
	NotAccepted int `json:"not_accepted"`
}

type releaseEvent struct {
	Object  string `json:"object"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	EventID string `json:"event_id,omitempty"`
	Channel string `json:"channel,omitempty"`
}

func ndjson(lines ...any) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		switch v := l.(type) {
		case string:
			b.WriteString(v)
		default:
			j, _ := json.Marshal(v)
			b.Write(j)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// publish posts an NDJSON batch and returns the status, Retry-After and the answer.
func (s *releaseStack) publish(body []byte) (int, string, publishAnswer) {
	s.t.Helper()
	status, h, raw := s.callH(http.MethodPost, "/api/v1/releases", s.publisherKey, "application/x-ndjson", body)
	var a publishAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		s.t.Fatalf("publish answer %d is not JSON: %v: %.300s", status, err, raw)
	}
	return status, h.Get("Retry-After"), a
}

// entry reads GET /api/v1/objects/{key}; ok is false on 404.
func (s *releaseStack) entry(key string) (api.CatalogEntry, bool) {
	s.t.Helper()
	status, raw := s.call(http.MethodGet, "/api/v1/objects/"+key, "", "", nil)
	if status == http.StatusNotFound {
		return api.CatalogEntry{}, false
	}
	var e api.CatalogEntry
	if status != http.StatusOK || json.Unmarshal(raw, &e) != nil {
		s.t.Fatalf("GET /api/v1/objects/%s: %d %s", key, status, raw)
	}
	return e, true
}

// waitEntry polls the catalog until the object's entry has the state.
func (s *releaseStack) waitEntry(key, state string, within time.Duration) api.CatalogEntry {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		e, ok := s.entry(key)
		if ok && e.State == state {
			return e
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("catalog entry of %s is %+v (found %v) after %s, want state %q", key, e, ok, within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type releaseStats = api.ReleaseStats

func (s *releaseStack) stats() releaseStats {
	s.t.Helper()
	status, raw := s.call(http.MethodGet, "/api/v1/admin/releases/stats", releaseAdminKey, "", nil)
	var st releaseStats
	if status != http.StatusOK || json.Unmarshal(raw, &st) != nil {
		s.t.Fatalf("release stats: %d %s", status, raw)
	}
	return st
}

// waitStats polls the release stats until ok says so.
func (s *releaseStack) waitStats(within time.Duration, what string, ok func(releaseStats) bool) releaseStats {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := s.stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not reached within %s: %+v", what, within, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// downloadStatus posts a download request and returns the status and body.
func (s *releaseStack) downloadStatus(object string) (int, string) {
	s.t.Helper()
	status, raw := s.call(http.MethodPost, "/api/v1/downloads", "", "application/json", []byte(fmt.Sprintf(`{"object":%q}`, object)))
	return status, strings.TrimSpace(string(raw))
}
