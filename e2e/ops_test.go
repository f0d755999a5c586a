package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

const opsAdminKey = "slk_e2e_ops_operator_key"

// opsMetricsToken is the bearer token scrape sends (a role without
// SLUICE_METRICS_TOKEN ignores it).
const opsMetricsToken = "e2e-metrics-token"

// opsCall calls the admin API with the operator key, expects want, and decodes the
// answer into out (if not nil).
func (s *stack) opsCall(method, path string, body any, want int, out any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.ingressURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+opsAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d %s (want %d)", method, path, resp.StatusCode, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

func (s *stack) nodes() []api.Node {
	s.t.Helper()
	var out api.Nodes
	s.opsCall(http.MethodGet, "/api/v1/admin/workers", nil, http.StatusOK, &out)
	return out.Nodes
}

// scrape reads a Prometheus text exposition into series ("name{labels}") -> value,
// and returns the raw text too.
func scrape(t *testing.T, url string) (map[string]float64, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+opsMetricsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	series, err := testenv.ParseMetrics(raw)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return series, string(raw)
}

func needSeries(t *testing.T, role string, series map[string]float64, name string, ok func(float64) bool) {
	t.Helper()
	v, found := series[name]
	if !found {
		t.Errorf("%s /metrics has no %s", role, name)
		return
	}
	if !ok(v) {
		t.Errorf("%s /metrics: %s = %v", role, name, v)
	}
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

// TestOpsMetricsRegistryAndStats runs the roles as separate processes, downloads a
// file and refuses a forged link, then checks what an operator sees: each role's
// /metrics, the fleet registry, the admin stats, and the logs.
func TestOpsMetricsRegistryAndStats(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 3, Env: []string{"SLUICE_ADMIN_KEY=" + opsAdminKey, "SLUICE_LOG_LEVEL=debug", // a line per request and per ticket
		"SLUICE_METRICS_TOKEN=" + opsMetricsToken}})
	s.dumpLogsOnFailure()
	const object = "releases/app-1.0.tar.gz"
	data := randomBytes(3<<20, 9)
	s.putObject(object, data)
	s.startAll(2)
	edgeLog, workerLogs, ingressLog := s.roles[0].Log, []string{s.roles[1].Log, s.roles[2].Log}, s.roles[3].Log

	// Every worker and the edge register and keep beating.
	var nodes []api.Node
	opsWait(t, 10*time.Second, "two workers, one edge and one ingress in the registry", func() bool {
		nodes = s.nodes()
		return len(nodes) == 4
	})
	byRole := map[string][]api.Node{}
	for _, n := range nodes {
		byRole[n.Role] = append(byRole[n.Role], n)
		if n.Version == "" || n.Address == "" || time.Since(n.LastBeat) > 5*time.Second {
			t.Errorf("node %+v: want a version, an address and a recent beat", n)
		}
	}
	if len(byRole["worker"]) != 2 || len(byRole["edge"]) != 1 || byRole["edge"][0].Address != strings.TrimPrefix(s.edgeURL, "http://") {
		t.Fatalf("registry: %+v", nodes)
	}

	id := s.request(object).ID
	link := s.follow(id, 20*time.Second)
	if sum, n, resp := download(t, link); resp.StatusCode != http.StatusOK || n != int64(len(data)) || sum != sha(data) {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
	}
	s.waitStatus(id, "done", 10*time.Second)
	token := strings.Split(strings.TrimPrefix(link, s.edgeURL+"/d/"), "/")[0]
	forged := s.edgeURL + "/d/" + token[:len(token)-4] + "AAAA/x"
	if _, _, resp := download(t, forged); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged link: %d", resp.StatusCode)
	}

	// The edge's public port serves downloads only: its metrics and debug counters
	// are on its operations port.
	for _, path := range []string{"/metrics", "/debug/edge"} {
		if code := httpStatus(s.edgeURL + path); code != http.StatusNotFound {
			t.Errorf("GET %s on the edge's public port: %d, want 404", path, code)
		}
	}
	// /metrics wants the token on every role.
	for _, url := range []string{s.edgeMetricsURL, s.ingressURL, "http://" + byRole["worker"][0].Address} {
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s/metrics without the token: %d, want 401", url, resp.StatusCode)
		}
	}

	// The edge: bytes, streams, the refused link by reason, requests by route pattern.
	edge, edgeText := scrape(t, s.edgeMetricsURL+"/metrics")
	needSeries(t, "edge", edge, "sluice_edge_sent_bytes_total", equal(float64(len(data))))
	needSeries(t, "edge", edge, "sluice_edge_active_streams", equal(0))
	needSeries(t, "edge", edge, `sluice_edge_token_rejections_total{reason="invalid"}`, equal(1))
	needSeries(t, "edge", edge, `sluice_http_requests_total{code="200",route="GET /d/{token}/{filename...}",server="edge"}`, equal(1))
	needSeries(t, "edge", edge, `sluice_breaker_state{breaker="objects",state="closed"}`, equal(1))
	needSeries(t, "edge", edge, `sluice_build_info{role="edge",version="dev"}`, equal(1))
	needSeries(t, "edge", edge, `sluice_storage_operation_duration_seconds_count{operation="open"}`, atLeast(1))

	// The workers: one of them admitted the ticket, after a wait it measured.
	var admissions, waits float64
	for _, w := range byRole["worker"] {
		m, _ := scrape(t, "http://"+w.Address+"/metrics")
		needSeries(t, "worker", m, "sluice_worker_held_tickets", atLeast(0))
		needSeries(t, "worker", m, `sluice_redis_command_duration_seconds_count{command="admission.admit"}`, atLeast(1))
		admissions += m["sluice_admissions_total"]
		waits += m["sluice_ticket_wait_seconds_count"]
	}
	if admissions != 1 || waits != 1 {
		t.Errorf("workers report %v admissions and %v waits, want 1 and 1", admissions, waits)
	}

	// A release event is counted by its outcome where it was verified.
	s.opsCall(http.MethodPost, "/api/v1/releases", map[string]any{"object": object, "sha256": sha(data),
		"size": len(data), "event_id": "ci-build-42"}, http.StatusAccepted, nil)
	opsWait(t, 10*time.Second, "the release event counted as verified", func() bool {
		var verified float64
		for _, w := range byRole["worker"] {
			m, _ := scrape(t, "http://"+w.Address+"/metrics")
			verified += m[`sluice_release_events_total{outcome="verified"}`]
		}
		return verified == 1
	})

	// The ingress: the ledger's figures and the API's.
	var ingress map[string]float64
	var ingressText string
	opsWait(t, 5*time.Second, "the ledger figures on the ingress", func() bool {
		ingress, ingressText = scrape(t, s.ingressURL+"/metrics")
		return ingress[`sluice_tickets_ended_total{state="done"}`] == 1
	})
	needSeries(t, "ingress", ingress, "sluice_slots_limit", equal(3))
	needSeries(t, "ingress", ingress, "sluice_slots_in_use", equal(0))
	needSeries(t, "ingress", ingress, `sluice_tickets{state="queued"}`, equal(0))
	needSeries(t, "ingress", ingress, "sluice_queue_admissible_backlog_tickets", equal(0))
	needSeries(t, "ingress", ingress, "sluice_ledger_up", equal(1))
	needSeries(t, "ingress", ingress, `sluice_http_requests_total{code="202",route="/api/v1/downloads",server="ingress"}`, equal(1))
	needSeries(t, "ingress", ingress, `sluice_nats_publish_duration_seconds_count{stream="SLUICE_TICKETS"}`, equal(1))

	// A second ingress: the ledger's figures, the same for both, come from one of
	// them only (the fleet's leading ingress); both say they reach the ledger.
	first := s.ingressURL
	s.start("ingress")
	second := s.ingressURL
	s.ingressURL = first
	opsWait(t, 10*time.Second, "the ledger figures from exactly one of two ingresses", func() bool {
		exporting := 0
		for _, url := range []string{first, second} {
			m, _ := scrape(t, url+"/metrics")
			if m["sluice_ledger_up"] != 1 {
				return false
			}
			if _, ok := m["sluice_slots_limit"]; ok {
				exporting++
			}
		}
		return exporting == 1
	})

	// No label holds a ticket id, an object key or a token.
	for role, text := range map[string]string{"edge": edgeText, "ingress": ingressText} {
		for _, secret := range []string{id, object, token[:20]} {
			if strings.Contains(text, secret) {
				t.Errorf("%s /metrics contains %q", role, secret)
			}
		}
	}

	// The admin stats: the live picture plus the fleet's recent activity.
	var st api.Stats
	// The ledger's part is a snapshot shared by the fleet and up to a second old: wait
	// for it to show the ended download too.
	opsWait(t, 5*time.Second, "the admission in the stats' activity window and the ended download", func() bool {
		st = api.Stats{}
		s.opsCall(http.MethodGet, "/api/v1/admin/stats", nil, http.StatusOK, &st)
		return st.Activity != nil && st.Activity.Admissions == 1 && st.Ended["done"] == 1
	})
	if st.GlobalLimit != 3 || st.Ended["done"] != 1 || st.Nodes["worker"] != 2 || st.Nodes["edge"] != 1 || st.Activity.WaitP50 <= 0 {
		t.Errorf("stats: %+v", st)
	}
	// Without the operator key: refused.
	resp, err := http.Get(s.ingressURL + "/api/v1/admin/workers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("admin workers without a key: %d", resp.StatusCode)
	}

	// Logs: JSON, one line per request and per state change, never a token.
	edgeLines := logLines(t, edgeLog)
	var streamed bool
	for _, l := range edgeLines {
		if l["msg"] == "request" && l["route"] == "GET /d/{token}/{filename...}" && l["ticket"] == id && l["status"] == float64(200) {
			streamed = true
		}
	}
	if !streamed {
		t.Errorf("no edge request line for the download of %s", id)
	}
	for _, f := range append([]string{edgeLog, ingressLog}, workerLogs...) {
		raw, _ := os.ReadFile(f)
		if bytes.Contains(raw, []byte(token[:32])) {
			t.Errorf("%s holds the download token", f)
		}
		if bytes.Contains(raw, []byte(opsAdminKey)) {
			t.Errorf("%s holds the operator key", f)
		}
	}
	var accepted, ready bool
	for _, l := range logLines(t, ingressLog) {
		accepted = accepted || l["msg"] == "ticket accepted" && l["ticket"] == id
	}
	for _, f := range workerLogs {
		for _, l := range logLines(t, f) {
			ready = ready || l["msg"] == "ticket ready" && l["ticket"] == id
		}
	}
	if !accepted || !ready {
		t.Errorf("state changes logged: accepted %v, ready %v", accepted, ready)
	}

	// A worker that shuts down leaves the registry at once, well before its entry's
	// 10 s TTL would lapse.
	if err := s.roles[1].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	opsWait(t, 7*time.Second, "the stopped worker to leave the registry", func() bool {
		workers := 0
		for _, n := range s.nodes() {
			if n.Role == "worker" {
				workers++
			}
		}
		return workers == 1
	})
}

// logLines reads a role's JSON log, one object per line.
func logLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// opsWait polls cond until it holds, failing the test after within.
func opsWait(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
