package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// allInOne is `sluice serve` on a data directory that outlives its process, so that
// a test can crash it and start it again as a user would: same directory, same ports.
type allInOne struct {
	t        *testing.T
	dataDir  string
	env      []string
	api, dl  string // ingress and edge base URLs
	proc     *testenv.Process
	readyFor time.Duration // how long the last start took until /readyz answered 200
}

const serveOperatorKey = "slk_serverestart_e2e0123456789"

func newAllInOne(t *testing.T, env ...string) *allInOne {
	t.Helper()
	a := &allInOne{t: t, dataDir: t.TempDir()}
	api, edge := testenv.FreePort(t), testenv.FreePort(t)
	a.api = "http://127.0.0.1:" + strconv.Itoa(api)
	a.dl = "http://127.0.0.1:" + strconv.Itoa(edge)
	a.env = append([]string{
		"SLUICE_DATA_DIR=" + a.dataDir,
		"SLUICE_INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(api),
		"SLUICE_EDGE_ADDR=127.0.0.1:" + strconv.Itoa(edge),
		"SLUICE_PUBLIC_EDGE_URL=" + a.dl,
		"SLUICE_ADMIN_KEY=" + serveOperatorKey,
		"SLUICE_TICKET_RATE=0",
		"SLUICE_LOG_LEVEL=debug",
	}, env...)
	return a
}

func (a *allInOne) start() {
	a.t.Helper()
	began := time.Now()
	a.proc = testenv.Start(a.t, a.t.TempDir(), sluiceBin, a.env, "serve")
	testenv.WaitHTTP(a.t, a.api+"/readyz", 30*time.Second, a.proc.Log)
	a.readyFor = time.Since(began)
}

// stop ends the process with sig (SIGKILL: a crash; SIGTERM: a clean stop).
func (a *allInOne) stop(sig syscall.Signal) {
	a.t.Helper()
	if err := a.proc.Signal(sig); err != nil {
		a.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = a.proc.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		a.t.Fatalf("sluice serve did not exit within 30s of %v", sig)
	}
}

func (a *allInOne) call(method, path, key string, body any) (int, []byte) {
	a.t.Helper()
	code, _, raw := call(a.t, method, a.api+path, key, body)
	return code, raw
}

func (a *allInOne) mustJSON(method, path, key string, body, out any, want int) {
	a.t.Helper()
	code, raw := a.call(method, path, key, body)
	if code != want {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, code, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

func (a *allInOne) ticket(id string) (int, api.Ticket) {
	a.t.Helper()
	// As an operator, who may read any ticket (one here is made with a client key).
	code, raw := a.call(http.MethodGet, "/api/v1/tickets/"+id, serveOperatorKey, nil)
	var tk api.Ticket
	_ = json.Unmarshal(raw, &tk)
	return code, tk
}

func (a *allInOne) newTicket(object, key, idem string) api.Ticket {
	a.t.Helper()
	b, _ := json.Marshal(map[string]string{"object": object})
	req, _ := http.NewRequest(http.MethodPost, a.api+"/api/v1/downloads", bytes.NewReader(b))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		a.t.Fatalf("POST /api/v1/downloads %s: %d %s", object, resp.StatusCode, raw)
	}
	var tk api.Ticket
	if err := json.Unmarshal(raw, &tk); err != nil {
		a.t.Fatal(err)
	}
	return tk
}

func (a *allInOne) awaitStatus(id, status string, within time.Duration) api.Ticket {
	a.t.Helper()
	var tk api.Ticket
	eventually(a.t, within, "ticket "+id+" "+status, func() bool {
		_, tk = a.ticket(id)
		return tk.Status == status
	})
	return tk
}

// What a restart of the all-in-one must keep: keys, limits, weights and
// pause; the catalog (verified, rejected, channel aliases); Idempotency-Key bindings;
// every accepted ticket, answering at once with its place in line kept; and a
// download cut by the crash resumes with the link it had, without a second link
// holding a slot. Both after a crash (SIGKILL) and after a clean stop (SIGTERM).
func TestServeRestartLosesNothing(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) { serveRestart(t, sig) })
	}
}

func serveRestart(t *testing.T, sig syscall.Signal) {
	a := newAllInOne(t, "SLUICE_GLOBAL_LIMIT=1", "SLUICE_STREAM_LEASE=3s", "SLUICE_SHUTDOWN_WAIT=1s", "SLUICE_DRAIN_DELAY=0s")
	objects := filepath.Join(a.dataDir, "objects")
	big := randomBytes(4<<20, 7)
	good, bad := randomBytes(64<<10, 8), randomBytes(64<<10, 9)
	for name, b := range map[string][]byte{"big.bin": big, "rel/good.bin": good, "rel/bad.bin": bad} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(objects, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(objects, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.start()
	defer func() {
		if t.Failed() {
			out, _ := os.ReadFile(a.proc.Log)
			t.Logf("last serve log:\n%s", tail(out, 6000))
		}
	}()

	// Records made through the API.
	var key struct{ ID, Key string }
	a.mustJSON(http.MethodPost, "/api/v1/admin/keys", serveOperatorKey, map[string]string{"scope": "client", "tenant": "acme"}, &key, http.StatusCreated)
	var pub struct{ ID, Key string }
	a.mustJSON(http.MethodPost, "/api/v1/admin/keys", serveOperatorKey, map[string]string{"scope": "publisher", "tenant": "ci"}, &pub, http.StatusCreated)
	var limits json.RawMessage
	a.mustJSON(http.MethodPut, "/api/v1/admin/limits", serveOperatorKey,
		map[string]any{"global": 2, "tenants": map[string]any{"acme": map[string]any{"weight": 3, "limit": 2}}}, &limits, http.StatusOK)
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	events := fmt.Sprintf(`{"object":"rel/good.bin","sha256":%q,"size":%d,"event_id":"good-1","channel":"stable"}
{"object":"rel/bad.bin","sha256":%q,"size":%d,"event_id":"bad-1"}
`, sum(good), len(good), sum(good), len(bad))
	req, _ := http.NewRequest(http.MethodPost, a.api+"/api/v1/releases", bytes.NewBufferString(events))
	req.Header.Set("Authorization", "Bearer "+pub.Key)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := apiClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %v %v", err, resp)
	}
	resp.Body.Close()
	catalogState := func(object string) string {
		var e struct{ State string }
		_, raw := a.call(http.MethodGet, "/api/v1/objects/"+object, pub.Key, nil)
		_ = json.Unmarshal(raw, &e)
		return e.State
	}
	eventually(t, 30*time.Second, "the catalog to verify and reject", func() bool {
		return catalogState("rel/good.bin") == "verified" && catalogState("rel/bad.bin") == "rejected"
	})
	refused := func() int {
		code, _ := a.call(http.MethodPost, "/api/v1/downloads", "", map[string]string{"object": "rel/bad.bin"})
		return code
	}
	if code := refused(); code != http.StatusConflict {
		t.Fatalf("a rejected object answered %d before the restart, want 409", code)
	}

	// Tickets: one streaming (cut by the stop), one ready and never used, three queued.
	streaming := a.newTicket("big.bin", key.Key, "")
	first := a.awaitStatus(streaming.ID, "ready", 10*time.Second)
	dl, err := http.Get(first.DownloadURL)
	if err != nil || dl.StatusCode != http.StatusOK {
		t.Fatalf("start the download: %v %v", err, dl)
	}
	got := make([]byte, 512<<10)
	if _, err := io.ReadFull(dl.Body, got); err != nil {
		t.Fatal(err)
	}
	unused := a.newTicket("demo/hello.txt", "", "")
	a.awaitStatus(unused.ID, "ready", 10*time.Second)
	var queued []string
	for i := range 3 {
		queued = append(queued, a.newTicket("demo/hello.txt", "", "idem-"+strconv.Itoa(i)).ID)
	}
	a.mustJSON(http.MethodPost, "/api/v1/admin/pause", serveOperatorKey, nil, nil, http.StatusOK)
	var keysBefore, limitsBefore json.RawMessage
	a.mustJSON(http.MethodGet, "/api/v1/admin/keys", serveOperatorKey, nil, &keysBefore, http.StatusOK)
	a.mustJSON(http.MethodGet, "/api/v1/admin/limits", serveOperatorKey, nil, &limitsBefore, http.StatusOK)

	a.stop(sig)
	dl.Body.Close()
	a.start()
	t.Logf("restarted after %v: /readyz green %v after the start", sig, a.readyFor.Round(time.Millisecond))

	// Every ticket answers within 2 s of readiness, never 404, in its old order.
	deadline := time.Now().Add(2 * time.Second)
	all := append([]string{streaming.ID, unused.ID}, queued...)
	positions := map[string]int64{}
	for _, id := range all {
		code, tk := a.ticket(id)
		if code != http.StatusOK {
			t.Fatalf("ticket %s answered %d after the restart", id, code)
		}
		positions[id] = tk.Position
	}
	if time.Now().After(deadline) {
		t.Errorf("reading %d tickets after the restart took past 2 s", len(all))
	}
	pos := make([]int64, len(queued))
	for i, id := range queued {
		pos[i] = positions[id]
	}
	if !slices.IsSorted(pos) || pos[0] == pos[len(pos)-1] {
		t.Errorf("queued tickets lost their order: positions %v", pos)
	}

	// The records are exactly as before.
	var keysAfter, limitsAfter json.RawMessage
	a.mustJSON(http.MethodGet, "/api/v1/admin/keys", serveOperatorKey, nil, &keysAfter, http.StatusOK)
	a.mustJSON(http.MethodGet, "/api/v1/admin/limits", serveOperatorKey, nil, &limitsAfter, http.StatusOK)
	if !bytes.Equal(keysBefore, keysAfter) {
		t.Errorf("API keys changed across the restart:\n%s\n%s", keysBefore, keysAfter)
	}
	if !bytes.Equal(limitsBefore, limitsAfter) || !bytes.Contains(limitsAfter, []byte(`"paused":true`)) {
		t.Errorf("limits changed across the restart:\n%s\n%s", limitsBefore, limitsAfter)
	}
	later := []string{a.newTicket("demo/hello.txt", key.Key, "").ID} // the client key still works
	if again := a.newTicket("demo/hello.txt", "", "idem-0"); again.ID != queued[0] {
		t.Errorf("Idempotency-Key idem-0 made ticket %s after the restart, want %s", again.ID, queued[0])
	}
	if s := catalogState("rel/good.bin"); s != "verified" {
		t.Errorf("rel/good.bin is %q after the restart, want verified", s)
	}
	if code := refused(); code != http.StatusConflict {
		t.Errorf("the rejected object answered %d after the restart, want 409", code)
	}
	alias := a.newTicket("stable/latest", "", "")
	if alias.Object != "rel/good.bin" {
		t.Errorf("stable/latest names %q after the restart, want rel/good.bin", alias.Object)
	}
	later = append(later, alias.ID)

	// The cut download resumes with the same link, and that link keeps the slot: the
	// ticket ends done without being admitted again.
	rq, _ := http.NewRequest(http.MethodGet, first.DownloadURL, nil)
	rq.Header.Set("Range", "bytes="+strconv.Itoa(len(got))+"-")
	rest, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rest.Body)
	rest.Body.Close()
	if rest.StatusCode != http.StatusPartialContent || !bytes.Equal(append(got, body...), big) {
		t.Fatalf("resume with the old link: %d, %d bytes; want 206 and the rest of the object", rest.StatusCode, len(body))
	}
	done := a.awaitStatus(streaming.ID, "done", 10*time.Second)
	if done.DownloadURL != "" && done.DownloadURL != first.DownloadURL {
		t.Errorf("the resumed ticket was given a second link: %s", done.DownloadURL)
	}

	// Nothing is left holding a slot once the rest is canceled.
	a.mustJSON(http.MethodPost, "/api/v1/admin/resume", serveOperatorKey, nil, nil, http.StatusOK)
	for _, id := range append(append([]string{unused.ID}, queued...), later...) {
		if code, raw := a.call(http.MethodDelete, "/api/v1/tickets/"+id, serveOperatorKey, nil); code != http.StatusOK && code != http.StatusConflict {
			t.Errorf("cancel %s: %d %s", id, code, raw)
		}
	}
	var st api.Stats
	eventually(t, 10*time.Second, "every slot free", func() bool {
		a.mustJSON(http.MethodGet, "/api/v1/admin/stats", serveOperatorKey, nil, &st, http.StatusOK)
		return st.SlotsInUse == 0
	})
}
