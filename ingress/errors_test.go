package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// problemAnswer is an error answer as a client decodes it (a refused release batch
// adds its counts).
type problemAnswer struct {
	api.Problem
	NotAccepted int `json:"not_accepted"`
}

// answerTo sends a request to handler and decodes its problem details.
func answerTo(t *testing.T, handler http.Handler, req *http.Request) (*httptest.ResponseRecorder, problemAnswer) {
	t.Helper()
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	var p problemAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s %s: %d %q: %v", req.Method, req.URL, rec.Code, rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s %s: Content-Type %q, want application/problem+json", req.Method, req.URL, ct)
	}
	if p.Status != rec.Code || p.Title != http.StatusText(rec.Code) || p.Type != "https://sluice.dev/problems/"+p.Code ||
		p.Code == "" || p.Detail == "" || p.Error != p.Detail {
		t.Errorf("%s %s: %d %+v is not complete problem details", req.Method, req.URL, rec.Code, p)
	}
	return rec, p
}

// Errors a handler returns come out as RFC 9457 problem details with the code,
// hint and Retry-After clients act on, the instance naming the path but not the query.
func TestErrorsAreProblemDetails(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{fmt.Errorf("stat: %w", objstore.ErrNotFound), http.StatusNotFound, "object_not_found", ""},
		{fmt.Errorf("stat: %w", objstore.ErrInvalidKey), http.StatusBadRequest, "invalid_object_key", ""},
		{fmt.Errorf("publish: %w", queue.ErrFull), http.StatusServiceUnavailable, "queue_full", "30"},
		{fmt.Errorf("stat: %w", objstore.ErrUnavailable), http.StatusServiceUnavailable, "storage_unavailable", "5"},
		{errors.New("boom"), http.StatusInternalServerError, "internal", ""},
	} {
		r := gin.New()
		r.Use(errorsToJSON(slog.New(slog.DiscardHandler)))
		r.GET("/api/v1/tickets/:id", func(c *gin.Context) { _ = c.Error(tc.err) })
		rec, p := answerTo(t, r, httptest.NewRequest(http.MethodGet, "/api/v1/tickets/t1?ticket=secret", nil))
		if rec.Code != tc.status || p.Code != tc.code || p.Hint == "" || rec.Header().Get("Retry-After") != tc.retryAfter {
			t.Errorf("%v: %d %s hint %q Retry-After %q, want %d %s Retry-After %q", tc.err, rec.Code, p.Code, p.Hint,
				rec.Header().Get("Retry-After"), tc.status, tc.code, tc.retryAfter)
		}
		if p.Instance != "/api/v1/tickets/t1" || strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("%v: instance %q, want the path without its query", tc.err, p.Instance)
		}
	}
}

// An error's extra fields are extension members; they cannot replace the standard ones.
func TestProblemFieldsAreExtensions(t *testing.T) {
	r := gin.New()
	r.POST("/api/v1/releases", func(c *gin.Context) {
		writeError(c, &apiError{Status: http.StatusServiceUnavailable, Code: "release_queue_full", Message: "the release queue is full",
			RetryAfter: 2, Fields: map[string]any{"not_accepted": 200, "status": "overwritten?", "code": "other"}})
	})
	rec, p := answerTo(t, r, httptest.NewRequest(http.MethodPost, "/api/v1/releases", nil))
	if p.NotAccepted != 200 || p.Code != "release_queue_full" || p.Status != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("%d %q", rec.Code, rec.Body)
	}
}

// What the router itself refuses (an unknown path, a missing or malformed key) is
// problem details too.
func TestRouterRefusalsAreProblemDetails(t *testing.T) {
	h := New(Config{Logger: slog.New(slog.DiscardHandler), RequireClientKey: true}).Handler()
	for _, tc := range []struct {
		method, path, auth string
		status             int
		code               string
	}{
		{http.MethodGet, "/api/v1/nowhere", "", http.StatusNotFound, "no_route"},
		{http.MethodPost, "/api/v1/downloads", "", http.StatusUnauthorized, "key_required"},
		{http.MethodGet, "/api/v1/admin/stats", "Basic dXNlcjpwYXNz", http.StatusUnauthorized, "invalid_authorization"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{"object":"a"}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec, p := answerTo(t, h, req)
		if rec.Code != tc.status || p.Code != tc.code || p.Instance != tc.path {
			t.Errorf("%s %s: %d %s instance %q, want %d %s", tc.method, tc.path, rec.Code, p.Code, p.Instance, tc.status, tc.code)
		}
		if strings.Contains(rec.Body.String(), "dXNlcjpwYXNz") {
			t.Errorf("%s %s: the credentials come back in %q", tc.method, tc.path, rec.Body)
		}
	}
}
