package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// API keys across several ingress processes: the bootstrap operator key from
// SLUICE_ADMIN_KEY, keys created and revoked through the admin API (a revocation on
// one instance is effective at once on the others), 401 for a missing or wrong key,
// 403 for the wrong scope, the tenant of a ticket taken from its key, anonymous
// downloads as the tenant public unless SLUICE_REQUIRE_CLIENT_KEY is set.
func TestAdmissionAPIKeysAcrossIngresses(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{})
	s.putObject("k.bin", randomBytes(4<<10, 31))
	s.start("edge")
	s.start("worker")
	s.start("ingress")
	a := s.ingressURL
	s.start("ingress")
	b := s.ingressURL
	s.start("ingress", "SLUICE_REQUIRE_CLIENT_KEY=true")
	strict := s.ingressURL
	s.ingressURL = a

	expect := func(what string, code int, want int, body []byte) {
		t.Helper()
		if code != want {
			t.Errorf("%s: %d, want %d (%s)", what, code, want, body)
		}
	}
	// The admin API needs an operator key.
	for _, base := range []string{a, b} {
		code, h, body := call(t, http.MethodGet, base+"/api/v1/admin/keys", "", nil)
		expect("admin without a key", code, 401, body)
		if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: %v", h)
		}
		code, _, body = call(t, http.MethodGet, base+"/api/v1/admin/keys", "slk_aaaaaaaa_"+strings.Repeat("b", 32), nil)
		expect("admin with an unknown key", code, 401, body)
		code, _, body = call(t, http.MethodGet, base+"/api/v1/admin/keys", "not-a-key", nil)
		expect("admin with garbage", code, 401, body)
		code, _, body = call(t, http.MethodGet, base+"/api/v1/admin/keys", admOperatorKey, nil)
		expect("admin with the bootstrap key", code, 200, body)
	}
	// The scheme is matched in any case (RFC 9110); a key without one is refused with a
	// hint, and never echoed back.
	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"lower-case scheme", "bearer " + admOperatorKey, 200},
		{"upper-case scheme", "BEARER " + admOperatorKey, 200},
		{"no scheme", admOperatorKey, 401},
		{"another scheme", "Basic " + admOperatorKey, 401},
		{"scheme without a key", "Bearer ", 401},
	} {
		req, _ := http.NewRequest(http.MethodGet, a+"/api/v1/admin/keys", nil)
		req.Header.Set("Authorization", tc.header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		expect("Authorization with "+tc.name, resp.StatusCode, tc.want, body)
		if tc.want == 401 && (!bytes.Contains(body, []byte("Authorization: Bearer")) || bytes.Contains(body, []byte(admOperatorKey))) {
			t.Errorf("Authorization with %s: the answer should hint at the Bearer scheme and never echo the key: %s", tc.name, body)
		}
	}

	clientID, clientKey := s.createKey("client", "acme")
	_, publisherKey := s.createKey("publisher", "ci")
	_, opKey := s.createKey("operator", "ops")
	// Keys are shown once: the list (on another instance) has records, never secrets.
	code, _, body := call(t, http.MethodGet, b+"/api/v1/admin/keys", admOperatorKey, nil)
	expect("list keys", code, 200, body)
	if !strings.Contains(string(body), clientID) || strings.Contains(string(body), clientKey[len(clientKey)-32:]) {
		t.Errorf("key list should hold the id and never the secret: %s", body)
	}
	// Scopes: a client or publisher key cannot use the admin API; an operator key can.
	code, _, body = call(t, http.MethodGet, b+"/api/v1/admin/limits", clientKey, nil)
	expect("admin with a client key", code, 403, body)
	code, _, body = call(t, http.MethodPut, b+"/api/v1/admin/limits", publisherKey, map[string]int{"global": 99})
	expect("change limits with a publisher key", code, 403, body)
	code, _, body = call(t, http.MethodGet, b+"/api/v1/admin/limits", opKey, nil)
	expect("admin with a created operator key", code, 200, body)
	if bytes.Contains(body, []byte(`"global":99`)) {
		t.Error("a refused limits change was applied")
	}

	// Bad key requests are refused and create nothing.
	before := countKeys(t, a)
	for _, bad := range []map[string]string{
		{"scope": "root", "tenant": "acme"},
		{"scope": "client", "tenant": "Bad Tenant"},
		{"scope": "client", "tenant": "acme", "extra": "x"},
	} {
		code, _, body := call(t, http.MethodPost, a+"/api/v1/admin/keys", admOperatorKey, bad)
		expect("create key "+strings.Join([]string{bad["scope"], bad["tenant"]}, "/"), code, 400, body)
	}
	if after := countKeys(t, a); after != before {
		t.Errorf("refused key requests changed the key list: %d keys, then %d", before, after)
	}

	// A ticket belongs to its key's tenant; anonymous ones to public. Paused, so both
	// stay queued and show in the per-tenant stats.
	s.operator(http.MethodPost, "/api/v1/admin/pause", nil, nil)
	s.ingressURL = b
	acme := s.requestAs(clientKey, "k.bin")
	s.ingressURL = a
	anon := s.request("k.bin")
	st := s.admissionStats()
	if st.Tenants["acme"].Queued != 1 || st.Tenants["public"].Queued != 1 {
		t.Errorf("per-tenant backlog %+v, want one ticket for acme (client key) and one for public (anonymous)", st.Tenants)
	}
	rdb := s.redis.Client(t)
	if got := ledgerTicket(t, rdb, acme.ID)["tenant"]; got != "acme" {
		t.Errorf("ticket made with acme's key has tenant %q", got)
	}
	if got := ledgerTicket(t, rdb, anon.ID)["tenant"]; got != "public" {
		t.Errorf("anonymous ticket has tenant %q", got)
	}
	s.operator(http.MethodPost, "/api/v1/admin/resume", nil, nil)

	// Revoked on one instance: refused at once on every instance.
	code, _, body = call(t, http.MethodDelete, a+"/api/v1/admin/keys/"+clientID, admOperatorKey, nil)
	expect("revoke", code, 204, body)
	for _, base := range []string{b, a, strict} {
		code, _, body := call(t, http.MethodPost, base+"/api/v1/downloads", clientKey, map[string]string{"object": "k.bin"})
		expect("download with a revoked key on "+base, code, 401, body)
	}
	code, _, body = call(t, http.MethodDelete, b+"/api/v1/admin/keys/"+clientID, admOperatorKey, nil)
	expect("revoke twice", code, 404, body)

	// SLUICE_REQUIRE_CLIENT_KEY: anonymous downloads are refused there, keys work.
	code, _, body = call(t, http.MethodPost, strict+"/api/v1/downloads", "", map[string]string{"object": "k.bin"})
	expect("anonymous download where keys are required", code, 401, body)
	code, _, body = call(t, http.MethodGet, strict+"/api/v1/files/k.bin", "", nil)
	expect("anonymous files URL where keys are required", code, 401, body)
	_, key2 := s.createKey("client", "acme")
	code, _, body = call(t, http.MethodPost, strict+"/api/v1/downloads", key2, map[string]string{"object": "k.bin"})
	expect("download with a client key where keys are required", code, 202, body)
	var tk api.Ticket
	_ = json.Unmarshal(body, &tk)
	s.owners.Store(tk.ID, key2)
	// ... and the ticket goes all the way through.
	link := s.follow(tk.ID, 10*time.Second)
	if sum, _, _ := download(t, link); sum != sha(randomBytes(4<<10, 31)) {
		t.Error("the keyed download served wrong bytes")
	}
	code, _, body = call(t, http.MethodPost, strict+"/api/v1/downloads", publisherKey, map[string]string{"object": "k.bin"})
	expect("download with a publisher key (publisher includes client)", code, 202, body)
}

func countKeys(t *testing.T, base string) int {
	t.Helper()
	code, _, body := call(t, http.MethodGet, base+"/api/v1/admin/keys", admOperatorKey, nil)
	var out struct{ Keys []json.RawMessage }
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("list keys: %d %s", code, body)
	}
	return len(out.Keys)
}
