package ingress

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func corsHandler(t *testing.T, origins string) http.Handler {
	t.Helper()
	list, err := ParseCORSOrigins(origins)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Logger: slog.New(slog.DiscardHandler), CORSOrigins: list}).Handler()
}

func preflight(origin, method string) *http.Request {
	req := httptest.NewRequest(http.MethodOptions, "/api/v1/downloads", nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", method)
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	return req
}

// A browser on an allowed origin gets its preflight answered and may read the
// answer and the headers it acts on (Location, Retry-After).
func TestCORSAllowedOrigin(t *testing.T) {
	h := corsHandler(t, "https://app.example.com, http://localhost:3000")

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, preflight("https://app.example.com", http.MethodPost))
	hdr := rec.Header()
	if rec.Code != http.StatusNoContent || hdr.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("preflight: %d %v", rec.Code, hdr)
	}
	for _, want := range []string{"Authorization", "Content-Type", "Idempotency-Key"} {
		if !strings.Contains(hdr.Get("Access-Control-Allow-Headers"), want) {
			t.Errorf("Access-Control-Allow-Headers %q lacks %s", hdr.Get("Access-Control-Allow-Headers"), want)
		}
	}
	for _, want := range []string{"GET", "POST", "PUT", "DELETE"} {
		if !strings.Contains(hdr.Get("Access-Control-Allow-Methods"), want) {
			t.Errorf("Access-Control-Allow-Methods %q lacks %s", hdr.Get("Access-Control-Allow-Methods"), want)
		}
	}
	if !slices.Contains(hdr.Values("Vary"), "Origin") || hdr.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight headers %v", hdr)
	}

	// The request itself: the API answers as usual, with the CORS headers added.
	req := httptest.NewRequest(http.MethodGet, "/api/v1/nowhere", nil)
	req.Header.Set("Origin", "http://localhost:3000")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	hdr = rec.Header()
	if rec.Code != http.StatusNotFound || hdr.Get("Content-Type") != "application/problem+json" ||
		hdr.Get("Access-Control-Allow-Origin") != "http://localhost:3000" ||
		hdr.Get("Access-Control-Expose-Headers") != "Location, Retry-After" || !slices.Contains(hdr.Values("Vary"), "Origin") {
		t.Errorf("cross-origin request: %d %v", rec.Code, hdr)
	}
}

// Another origin's preflight is refused and its requests carry no grant; "*" allows
// any origin; with no origins configured nothing changes (OPTIONS is not routed).
func TestCORSRefusedAnyAndOff(t *testing.T) {
	h := corsHandler(t, "https://app.example.com")
	rec, p := answerTo(t, h, preflight("https://evil.example", http.MethodPost))
	if rec.Code != http.StatusForbidden || p.Code != "cors_origin_not_allowed" || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", rec.Code, rec.Header())
	}
	req := httptest.NewRequest(http.MethodGet, "/healthz", nil)
	req.Header.Set("Origin", "https://evil.example")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("request from another origin: %d %v", rec.Code, rec.Header())
	}

	rec = httptest.NewRecorder()
	corsHandler(t, "*").ServeHTTP(rec, preflight("https://anywhere.example", http.MethodDelete))
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("preflight with *: %d %v", rec.Code, rec.Header())
	}

	rec = httptest.NewRecorder()
	corsHandler(t, "").ServeHTTP(rec, preflight("https://app.example.com", http.MethodPost))
	if rec.Code != http.StatusNotFound || rec.Header().Get("Access-Control-Allow-Origin") != "" || rec.Header().Get("Vary") != "" {
		t.Errorf("preflight with CORS off: %d %v", rec.Code, rec.Header())
	}
}

func TestParseCORSOrigins(t *testing.T) {
	got, err := ParseCORSOrigins(" https://App.Example.com/ ,http://localhost:3000,")
	if err != nil || !slices.Equal(got, []string{"https://app.example.com", "http://localhost:3000"}) {
		t.Errorf("got %q, %v", got, err)
	}
	for _, bad := range []string{"app.example.com", "https://app.example.com/path", "ftp://x", "https://u@x"} {
		if _, err := ParseCORSOrigins(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
