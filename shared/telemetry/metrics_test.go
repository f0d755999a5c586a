package telemetry

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/api"
)

// With a token, /metrics answers only a bearer of it (the scheme in any case); the
// refusal is problem details naming the variable to set, as every other refusal is.
func TestMetricsHandlerWantsTheToken(t *testing.T) {
	h := NewMetrics("test", "test", "s3cret").Handler()
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Basic czNjcmV0", http.StatusUnauthorized},
		{"Bearer s3cret", http.StatusOK},
		{"bearer s3cret", http.StatusOK},
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, rec.Code, tc.want)
			continue
		}
		if tc.want == http.StatusOK {
			if !strings.Contains(rec.Body.String(), NameBuildInfo) {
				t.Errorf("Authorization %q: no metrics in the answer", tc.auth)
			}
			continue
		}
		var p api.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Header().Get("Content-Type") != api.ProblemContentType ||
			p.Code != "metrics_token_required" || !strings.Contains(p.Error, "SLUICE_METRICS_TOKEN") ||
			!strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %s %q (%v), want problem details naming SLUICE_METRICS_TOKEN", tc.auth, rec.Header(), rec.Body, err)
		}
	}
	open := httptest.NewRecorder()
	NewMetrics("test", "test", "").Handler().ServeHTTP(open, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if open.Code != http.StatusOK {
		t.Errorf("without a token: %d, want 200", open.Code)
	}
}
