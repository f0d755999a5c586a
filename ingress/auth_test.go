package ingress_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/apikeys"
)

// Each endpoint asks for its scope: no key, a malformed header or an unknown key is
// 401 with a WWW-Authenticate challenge, a key of too small a scope is 403, and an
// operator key created through the admin API works at once.
func TestScopes(t *testing.T) {
	a := newAPI(t)
	client := a.key(t, apikeys.ScopeClient, "acme")
	publisher := a.key(t, apikeys.ScopePublisher, "acme")

	limits := request{method: http.MethodGet, path: "/api/v1/admin/limits"}
	for _, c := range []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"no key", nil, http.StatusUnauthorized, "key_required"},
		{"unknown key", map[string]string{"Authorization": "Bearer " + apikeys.Generate()}, http.StatusUnauthorized, "invalid_key"},
		{"no scheme", map[string]string{"Authorization": a.operator}, http.StatusUnauthorized, "invalid_authorization"},
		{"basic", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, http.StatusUnauthorized, "invalid_authorization"},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, http.StatusUnauthorized, "invalid_authorization"},
		{"client key", map[string]string{"Authorization": "Bearer " + client}, http.StatusForbidden, "wrong_scope"},
		{"publisher key", map[string]string{"X-API-Key": publisher}, http.StatusForbidden, "wrong_scope"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := limits
			r.header = c.header
			ans := a.do(t, r)
			ans.problem(t, c.status, c.code)
			if c.status == http.StatusUnauthorized && !strings.HasPrefix(ans.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", ans.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(string(ans.body), a.operator) {
				t.Error("the answer repeats the presented key")
			}
		})
	}

	// The scheme is matched in any case; X-API-Key works too.
	a.do(t, request{method: http.MethodGet, path: limits.path, header: map[string]string{"Authorization": "bearer " + a.operator}}).
		decode(t, http.StatusOK, nil)
	a.do(t, request{method: http.MethodGet, path: limits.path, header: map[string]string{"X-API-Key": a.operator}}).
		decode(t, http.StatusOK, nil)

	// A new operator key works; once revoked it is refused.
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	a.do(t, request{method: http.MethodPost, path: "/api/v1/admin/keys", key: a.operator,
		body: map[string]string{"scope": "operator", "tenant": "ops", "name": "second"}}).decode(t, http.StatusCreated, &created)
	if created.Key == "" || created.ID == "" {
		t.Fatalf("created key: %+v", created)
	}
	a.do(t, request{method: http.MethodGet, path: limits.path, key: created.Key}).decode(t, http.StatusOK, nil)
	a.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/keys/" + created.ID, key: a.operator}).
		decode(t, http.StatusNoContent, nil)
	a.do(t, request{method: http.MethodGet, path: limits.path, key: created.Key}).problem(t, http.StatusUnauthorized, "invalid_key")
}

// With client keys required, an anonymous download is refused; a client key passes.
func TestRequireClientKey(t *testing.T) {
	a := newAPI(t, func(c *ingress.Config) { c.RequireClientKey = true })
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")}).
		problem(t, http.StatusUnauthorized, "key_required")
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", key: a.key(t, apikeys.ScopeClient, "acme"),
		body: download("demo/hello.txt")}).decode(t, http.StatusAccepted, nil)
}

// Bad input is a 4xx that says what is wrong, and changes nothing: no ticket stored,
// no limit changed.
func TestBadInputChangesNothing(t *testing.T) {
	a := newAPI(t)
	for _, c := range []struct {
		name   string
		r      request
		status int
		code   string
	}{
		{"not JSON", request{method: http.MethodPost, path: "/api/v1/downloads", body: `{"object":`}, http.StatusBadRequest, "invalid_body"},
		{"not UTF-8", request{method: http.MethodPost, path: "/api/v1/downloads", body: "{\"object\":\"\xff\"}"}, http.StatusBadRequest, "invalid_body"},
		{"no object", request{method: http.MethodPost, path: "/api/v1/downloads", body: `{}`}, http.StatusBadRequest, "invalid_object_key"},
		{"missing object", request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/missing.txt")}, http.StatusNotFound, "object_not_found"},
		{"idempotency key with a space", request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt"),
			header: map[string]string{"Idempotency-Key": "a b"}}, http.StatusBadRequest, "invalid_idempotency_key"},
		{"idempotency key too long", request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt"),
			header: map[string]string{"Idempotency-Key": strings.Repeat("k", 129)}}, http.StatusBadRequest, "invalid_idempotency_key"},
		{"negative limit", request{method: http.MethodPut, path: "/api/v1/admin/limits", key: a.operator, body: map[string]int{"global": -1}},
			http.StatusBadRequest, "invalid_limits"},
		{"unknown limits field", request{method: http.MethodPut, path: "/api/v1/admin/limits", key: a.operator, body: map[string]int{"globl": 3}},
			http.StatusBadRequest, "invalid_body"},
		{"unknown scope", request{method: http.MethodPost, path: "/api/v1/admin/keys", key: a.operator, body: map[string]string{"scope": "root"}},
			http.StatusBadRequest, "invalid_scope"},
		{"no such endpoint", request{method: http.MethodGet, path: "/api/v1/nothing"}, http.StatusNotFound, "no_route"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.do(t, c.r).problem(t, c.status, c.code)
		})
	}
	if n := a.storedTickets(t); n != 0 {
		t.Errorf("refused requests stored %d tickets", n)
	}
	var limits struct {
		Global int `json:"global"`
	}
	a.do(t, request{method: http.MethodGet, path: "/api/v1/admin/limits", key: a.operator}).decode(t, http.StatusOK, &limits)
	if limits.Global != 1 {
		t.Errorf("after refused changes the global limit is %d, want 1", limits.Global)
	}
}
