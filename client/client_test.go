package client

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Refusals are read from sluice's problem details, from problem details alone (a
// proxy's, or a server without the compatibility members) and from the older
// {error, code, hint} bodies alike.
func TestErrorsFromProblemDetails(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		want                    Error
	}{
		{"sluice", "application/problem+json",
			`{"type":"https://sluice.dev/problems/ticket_not_found","title":"Not Found","status":404,"detail":"no such ticket","instance":"/api/v1/tickets/T","code":"ticket_not_found","error":"no such ticket","hint":"request a new one"}`,
			Error{Status: 404, Code: "ticket_not_found", Message: "no such ticket", Hint: "request a new one"}},
		{"problem details alone", "application/problem+json",
			`{"type":"https://sluice.dev/problems/ticket_not_found","title":"Not Found","status":404,"detail":"no such ticket"}`,
			Error{Status: 404, Code: "ticket_not_found", Message: "no such ticket"}},
		{"title only", "application/problem+json", `{"type":"about:blank","title":"Not Found","status":404}`,
			Error{Status: 404, Message: "Not Found"}},
		{"older body", "application/json", `{"error":"no such ticket","code":"ticket_not_found","hint":"request a new one"}`,
			Error{Status: 404, Code: "ticket_not_found", Message: "no such ticket", Hint: "request a new one"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.Contains(r.Header.Get("Accept"), "application/problem+json") {
					t.Errorf("Accept %q does not name application/problem+json", r.Header.Get("Accept"))
				}
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			c, err := New(srv.URL, Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Ticket(t.Context(), "T")
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("%v is not an *Error", err)
			}
			if e.Status != tc.want.Status || e.Code != tc.want.Code || e.Message != tc.want.Message || e.Hint != tc.want.Hint {
				t.Errorf("got %+v, want %+v", *e, tc.want)
			}
		})
	}
}
