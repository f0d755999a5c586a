package signer

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// The public API's description (ingress/openapi.json, served by the ingress) also
// documents the edge: the path items with servers of their own. Every documented
// operation is routed here, and every refusal it documents is one problemFor gives,
// with the same status. (The ingress's test holds the rest against its router and
// validates every example against its schema.)
func TestOpenAPIDocumentsTheEdge(t *testing.T) {
	raw, err := os.ReadFile("../ingress/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	// The codes the edge answers, from every error problemFor knows.
	answers := map[string]int{}
	for _, err := range []error{token.ErrInvalid, token.ErrExpired, errObjectChanged, objstore.ErrNotFound,
		&objstore.AccessError{Code: "AccessDenied"}, objstore.ErrUnavailable, errPreconditionFailed, errRangeUnsatisfiable,
		errMethodNotAllowed, errNoRoute, errLedgerUnavailable, admission.ErrSlotNotHeld, admission.ErrTooManyConnections} {
		p := problemFor(err)
		answers[p.code] = p.status
	}
	h, _ := newTestEdge(t)
	documented := 0
	for path, item := range doc.Paths {
		if _, edge := item["servers"]; !edge {
			continue
		}
		for method, raw := range item {
			if method != "get" && method != "head" {
				continue
			}
			documented++
			var op struct {
				Responses map[string]struct {
					Content map[string]struct {
						Example struct {
							Code   string `json:"code"`
							Status int    `json:"status"`
						} `json:"example"`
					} `json:"content"`
				} `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			url := h.url(t, testKey)
			if strings.Contains(path, "{filename}") {
				url += "/sluice.tar.gz"
			}
			if resp, _ := h.do(t, strings.ToUpper(method), url); resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s: the edge answers %d", strings.ToUpper(method), path, resp.StatusCode)
			}
			for status, resp := range op.Responses {
				ex, ok := resp.Content["application/problem+json"]
				if !ok {
					continue
				}
				want, err := strconv.Atoi(status)
				if got, known := answers[ex.Example.Code]; err != nil || !known || got != want || ex.Example.Status != want {
					t.Errorf("%s %s %s: example code %q (status %d); the edge answers that code with %d", method, path, status, ex.Example.Code, ex.Example.Status, got)
				}
			}
		}
	}
	if documented != 4 {
		t.Errorf("%d edge operations documented, want GET and HEAD of /d/{token} and /d/{token}/{filename}", documented)
	}
}
