package ingress

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// openAPIDoc is openapi.json decoded as plain JSON values.
type openAPIDoc map[string]any

func loadOpenAPI(t testing.TB) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi.json is OpenAPI %v, want 3.1.0", doc["openapi"])
	}
	return doc
}

// operationMethods are the path item fields that are operations.
var operationMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// documented lists "METHOD /path" for every operation the ingress serves, with
// OpenAPI's {param} paths. A path item with servers of its own is the streaming
// edge's (signer's TestOpenAPIDocumentsTheEdge holds those against the edge's routes).
func (doc openAPIDoc) documented() []string {
	var ops []string
	for path, item := range doc["paths"].(map[string]any) {
		if _, elsewhere := item.(map[string]any)["servers"]; elsewhere {
			continue
		}
		for m := range item.(map[string]any) {
			if slices.Contains(operationMethods, m) {
				ops = append(ops, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

// openAPIPath writes a gin route's path the OpenAPI way: :id and *key become {id}, {key}.
func openAPIPath(ginPath string) string {
	segs := strings.Split(ginPath, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") {
			segs[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(segs, "/")
}

// Every route the router has is in the document, and every operation in the
// document is routed: a route added without its description, or a description left
// behind by a removed route, fails here.
func TestOpenAPIMatchesTheRouter(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler), Ops: &Ops{Metrics: telemetry.NewMetrics("ingress", "test", "")}})
	var routed []string
	for _, r := range s.router().Routes() {
		routed = append(routed, r.Method+" "+openAPIPath(r.Path))
	}
	sort.Strings(routed)
	documented := loadOpenAPI(t).documented()
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			t.Errorf("openapi.json documents %s, which is not routed", d)
		}
	}
	if len(routed) < 20 {
		t.Errorf("only %d routes: %v", len(routed), routed)
	}
}

// Every example in the document is an instance of its schema, every $ref resolves,
// and every problem example is what writeError would send for its status.
func TestOpenAPIExamplesMatchTheirSchemas(t *testing.T) {
	doc := loadOpenAPI(t)
	examples := 0
	for path, item := range doc["paths"].(map[string]any) {
		for m, op := range item.(map[string]any) {
			if !slices.Contains(operationMethods, m) {
				continue
			}
			where := strings.ToUpper(m) + " " + path
			op := op.(map[string]any)
			if body, ok := op["requestBody"].(map[string]any); ok {
				examples += doc.checkContent(t, where+" request", body, 0)
			}
			responses, _ := op["responses"].(map[string]any)
			if len(responses) == 0 {
				t.Errorf("%s has no responses", where)
			}
			for status, resp := range responses {
				code, err := strconv.Atoi(status)
				if err != nil {
					t.Errorf("%s: response %q is not a status", where, status)
					continue
				}
				examples += doc.checkContent(t, where+" "+status, doc.resolve(t, resp.(map[string]any)), code)
			}
		}
	}
	if examples < 30 {
		t.Errorf("only %d examples checked", examples)
	}
}

// checkContent validates the examples of a response or request body's content and
// returns how many it checked; status is the response's, 0 for a request.
func (doc openAPIDoc) checkContent(t *testing.T, where string, obj map[string]any, status int) int {
	t.Helper()
	content, _ := obj["content"].(map[string]any)
	// Readiness reports its checks (health.Answer), for probes, not problem details.
	if status >= 400 && content["application/problem+json"] == nil && where != "GET /readyz 503" {
		t.Errorf("%s: an error answer without application/problem+json", where)
	}
	n := 0
	for media, mt := range content {
		mt := mt.(map[string]any)
		schema, _ := mt["schema"].(map[string]any)
		if schema == nil {
			t.Errorf("%s %s: no schema", where, media)
			continue
		}
		ex, ok := mt["example"]
		if !ok {
			if (media == "application/json" || media == "application/problem+json") && !strings.HasSuffix(where, "openapi.json 200") {
				t.Errorf("%s %s: no example", where, media)
			}
			continue
		}
		n++
		for _, e := range doc.validate(schema, ex, "example") {
			t.Errorf("%s %s: %s", where, media, e)
		}
		if media == "application/problem+json" {
			p := ex.(map[string]any)
			if p["status"] != float64(status) || p["type"] != api.ProblemTypeBase+fmt.Sprint(p["code"]) ||
				p["title"] != http.StatusText(status) || p["detail"] != p["error"] {
				t.Errorf("%s: problem example %v does not match its status %d", where, p, status)
			}
		}
	}
	return n
}

// resolve follows a response's $ref into components.
func (doc openAPIDoc) resolve(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	ref, ok := obj["$ref"].(string)
	if !ok {
		return obj
	}
	target, ok := doc.lookup(ref)
	if !ok {
		t.Fatalf("$ref %q does not resolve", ref)
	}
	return target
}

func (doc openAPIDoc) lookup(ref string) (map[string]any, bool) {
	var cur any = map[string]any(doc)
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur = m[part]
	}
	m, ok := cur.(map[string]any)
	return m, ok
}

// docURL is where the schemas' compiler finds the document, so that the $refs of a
// schema taken out of it ("#/components/schemas/Ticket") still resolve.
const docURL = "sluice:openapi.json"

// validate checks v against schema, a schema of the document, with a JSON Schema
// 2020-12 validator (OpenAPI 3.1's dialect), formats asserted. It returns what does
// not match, each naming where.
func (doc openAPIDoc) validate(schema map[string]any, v any, at string) []string {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(docURL, map[string]any(doc)); err != nil {
		return []string{at + ": " + err.Error()}
	}
	const schemaURL = "sluice:schema.json"
	if err := c.AddResource(schemaURL, rooted(schema)); err != nil {
		return []string{at + ": " + err.Error()}
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return []string{at + ": the schema does not compile: " + err.Error()}
	}
	if err := sch.Validate(v); err != nil {
		return []string{at + ": " + err.Error()}
	}
	return nil
}

// rooted is a copy of schema whose document-relative $refs name the document.
func rooted(schema any) any {
	switch s := schema.(type) {
	case map[string]any:
		out := make(map[string]any, len(s))
		for k, v := range s {
			if ref, ok := v.(string); ok && k == "$ref" && strings.HasPrefix(ref, "#/") {
				out[k] = docURL + ref
				continue
			}
			out[k] = rooted(v)
		}
		return out
	case []any:
		out := make([]any, len(s))
		for i, v := range s {
			out[i] = rooted(v)
		}
		return out
	}
	return schema
}

// The checker the tests above rely on catches what it is meant to.
func TestOpenAPIValidatorCatchesMismatches(t *testing.T) {
	doc := loadOpenAPI(t)
	ticket := map[string]any{"$ref": "#/components/schemas/Ticket"}
	for name, bad := range map[string]string{
		"missing required": `{"id":"t","object":"o","status":"queued"}`,
		"wrong type":       `{"id":"t","object":"o","status":"queued","position":"3","eta_seconds":0,"eta_known":true,"bytes_sent":0,"bytes_covered":0,"size":1,"created_at":"x"}`,
		"not in enum":      `{"id":"t","object":"o","status":"lost","position":3,"eta_seconds":0,"eta_known":true,"bytes_sent":0,"bytes_covered":0,"size":1,"created_at":"x"}`,
		"fraction":         `{"id":"t","object":"o","status":"queued","position":3.5,"eta_seconds":0,"eta_known":true,"bytes_sent":0,"bytes_covered":0,"size":1,"created_at":"2026-12-01T09:00:00Z"}`,
		"not a date-time":  `{"id":"t","object":"o","status":"queued","position":3,"eta_seconds":0,"eta_known":true,"bytes_sent":0,"bytes_covered":0,"size":1,"created_at":"yesterday"}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(bad), &v); err != nil {
			t.Fatal(err)
		}
		if errs := doc.validate(ticket, v, "ticket"); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The document is served, and what the server really answers with on an error is an
// instance of the document's Problem schema.
func TestOpenAPIIsServedAndProblemsMatchIt(t *testing.T) {
	srv := httptest.NewServer(New(Config{Logger: slog.New(slog.DiscardHandler), RequireClientKey: true}).Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || string(raw) != string(openAPI) {
		t.Fatalf("GET /api/v1/openapi.json: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(raw))
	}
	doc := loadOpenAPI(t)
	problem := map[string]any{"$ref": "#/components/schemas/Problem"}
	for _, path := range []string{"/nowhere", "/api/v1/admin/stats", "/api/v1/tickets/abc"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		for _, e := range doc.validate(problem, v, path) {
			t.Error(e)
		}
	}
}
